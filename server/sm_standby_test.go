package server

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/embedded"
)

// fakeCluster is a Cluster whose membership the test sets; nothing is
// routed anywhere.
type fakeCluster struct {
	mu        sync.Mutex
	nodes     []string
	reachable map[string]bool
	down      bool      // RouteAcked fails (the link is down)
	sent      []sentMsg // what RouteAcked queued
}

type sentMsg struct {
	node string
	kind peerKind // 0: a stanza (RouteAcked)
	msg  standbyMsg
	done func(error)
}

func (f *fakeCluster) Lookup(string) []PeerSession { return nil }
func (f *fakeCluster) Route(string, string, []byte) error {
	return nil
}
func (f *fakeCluster) RouteAcked(node, _ string, b []byte, done func(error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("link down")
	}
	f.sent = append(f.sent, sentMsg{node: node, done: done})
	return nil
}

func (f *fakeCluster) SendControl(string, byte, []byte) error { return nil }

func (f *fakeCluster) SendControlAcked(node string, kind byte, b []byte, done func(error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("link down")
	}
	var m standbyMsg
	if peerKind(kind) == peerStandbyUpdate {
		_ = json.Unmarshal(b, &m)
	}
	f.sent = append(f.sent, sentMsg{node: node, kind: peerKind(kind), msg: m, done: done})
	return nil
}

// take returns the messages queued since the last call.
func (f *fakeCluster) take() []sentMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.sent
	f.sent = nil
	return out
}
func (f *fakeCluster) Publish(PeerSession) {}
func (f *fakeCluster) Unpublish(string)    {}
func (f *fakeCluster) Nodes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.nodes)
}
func (f *fakeCluster) Reachable(n string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reachable[n]
}
func (f *fakeCluster) set(n string, up bool) {
	f.mu.Lock()
	f.reachable[n] = up
	f.mu.Unlock()
}

func replicaServer(t *testing.T, self string, fc *fakeCluster) *Server {
	t.Helper()
	store, err := embedded.Open(filepath.Join(t.TempDir(), "x.db"), embedded.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := DefaultConfig()
	cfg.Domains = []string{"example.com"}
	cfg.RequireTLS = false
	cfg.C2STLSAddr = ""
	cfg.NodeName = self
	cfg.SMResumeTimeout = time.Minute
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t))
	s, err := New(cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	s.SetCluster(fc)
	t.Cleanup(s.cancel)
	return s
}

// createUser adds account bare (password "pw") to s's store.
func createUser(t *testing.T, s *Server, bare string) {
	t.Helper()
	cred, err := storage.NewCredentials("pw", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.store.Users().CreateUser(context.Background(), bare, cred); err != nil {
		t.Fatal(err)
	}
}

func apply(t *testing.T, s *Server, m standbyMsg) {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	acked := false
	s.HandlePeerMessage("n9", byte(peerStandbyUpdate), b, func() { acked = true })
	if !acked {
		t.Fatalf("no receipt for %+v", m)
	}
}

func TestStandbyIsNextReachableNode(t *testing.T) {
	fc := &fakeCluster{nodes: []string{"a", "b", "c"}, reachable: map[string]bool{"a": true, "b": true, "c": true}}
	for self, want := range map[string]string{"a": "b", "b": "c", "c": "a"} {
		if got := replicaServer(t, self, fc).standbyNode(); got != want {
			t.Errorf("standby of %s = %q, want %q", self, got, want)
		}
	}
	fc.set("c", false)
	if got := replicaServer(t, "b", fc).standbyNode(); got != "a" {
		t.Errorf("standby of b with c unreachable = %q, want a", got)
	}
	alone := &fakeCluster{nodes: []string{"a"}, reachable: map[string]bool{}}
	if got := replicaServer(t, "a", alone).standbyNode(); got != "" {
		t.Errorf("standby of a lone node = %q", got)
	}
}

// TestReplicaFollowsOwner: the copy tracks the owner's updates, is refused
// while the owner lives, and hands over exactly the stanzas after the
// client's h once the owner is gone.
func TestReplicaFollowsOwner(t *testing.T) {
	fc := &fakeCluster{nodes: []string{"n1", "n2", "n3"}, reachable: map[string]bool{"n1": true, "n3": true}}
	s := replicaServer(t, "n2", fc)
	const id, full = "n1~abc", "alice@example.com/r1"
	st := func(n string) []byte {
		return []byte("<message to='" + full + "' id='" + n + "'><body>" + n + "</body></message>")
	}
	apply(t, s, standbyMsg{Op: "open", ID: id, Owner: "n1", Epoch: 7, Full: full, Base: 10, InH: 3,
		Out: [][]byte{st("s11"), st("s12"), st("s13")}, Pres: &standbyPresence{Available: true, Priority: 5}, Seq: 1})
	apply(t, s, standbyMsg{Op: "out", ID: id, Owner: "n1", Epoch: 7, Out: [][]byte{st("s14")}})
	apply(t, s, standbyMsg{Op: "ack", ID: id, Owner: "n1", Epoch: 7, H: 12})
	apply(t, s, standbyMsg{Op: "in", ID: id, Owner: "n1", Epoch: 7, H: 9})
	apply(t, s, standbyMsg{Op: "in", ID: id, Owner: "n1", Epoch: 7, H: 8}) // stale: ignored
	apply(t, s, standbyMsg{Op: "hello", Owner: "n1", Epoch: 7})

	req := takeoverReq{ID: id, Bare: "alice@example.com", H: 13, From: "n3", Req: "r1", Replica: true, OwnerUnreachable: true}
	if _, ok := s.giveReplica(req); ok {
		t.Fatal("copy handed over while its owner is alive")
	}
	if _, ok := s.giveReplica(takeoverReq{ID: id, Bare: "mallory@example.com", H: 13, From: "n3", Replica: true, OwnerUnreachable: true}); ok {
		t.Fatal("copy handed over to another account")
	}
	fc.set("n1", false) // this node lost its link to the owner…
	if _, ok := s.giveReplica(takeoverReq{ID: id, Bare: "alice@example.com", H: 13, From: "n3", Req: "r0", Replica: true}); ok {
		t.Fatal("copy handed over while the requester could reach the owner")
	}
	// …and so did the requester: the owner is taken for dead.
	resp, ok := s.giveReplica(req)
	if !ok || !resp.OK || !resp.Replica {
		t.Fatalf("copy not handed over: %+v", resp)
	}
	if resp.InH != 9 || resp.Full != full || !resp.Available || resp.Priority != 5 {
		t.Fatalf("state: %+v", resp)
	}
	if len(resp.Resend) != 1 || string(resp.Resend[0]) != string(st("s14")) {
		t.Fatalf("resend after client h=13: %q", resp.Resend)
	}
	if _, ok := s.giveReplica(req); ok {
		t.Fatal("copy handed over twice")
	}
}

// TestReplicaOfRestartedOwner: a copy made by an owner's earlier process
// can be resumed while the restarted owner is up.
func TestReplicaOfRestartedOwner(t *testing.T) {
	fc := &fakeCluster{nodes: []string{"n1", "n2"}, reachable: map[string]bool{"n1": true}}
	s := replicaServer(t, "n2", fc)
	apply(t, s, standbyMsg{Op: "open", ID: "n1~x", Owner: "n1", Epoch: 1, Full: "alice@example.com/r", Seq: 1})
	apply(t, s, standbyMsg{Op: "hello", Owner: "n1", Epoch: 2})
	if resp, ok := s.giveReplica(takeoverReq{ID: "n1~x", Bare: "alice@example.com", From: "n1", Replica: true}); !ok || !resp.OK {
		t.Fatalf("copy of a restarted owner refused: %+v", resp)
	}
}

// TestReplicaKeep: a keep message forgets the owner's copies it does not
// list, but not those opened after it was written.
func TestReplicaKeep(t *testing.T) {
	fc := &fakeCluster{nodes: []string{"n1", "n2"}, reachable: map[string]bool{"n1": true}}
	s := replicaServer(t, "n2", fc)
	for i, id := range []string{"n1~a", "n1~b", "n1~c"} {
		apply(t, s, standbyMsg{Op: "open", ID: id, Owner: "n1", Epoch: 1, Full: "u@example.com/" + id, Seq: uint64(i + 1)})
	}
	apply(t, s, standbyMsg{Op: "keep", Owner: "n1", Epoch: 1, Seq: 2, IDs: []string{"n1~a"}})
	s.replicas.mu.Lock()
	var left []string
	for id := range s.replicas.byID {
		left = append(left, id)
	}
	s.replicas.mu.Unlock()
	slices.Sort(left)
	if !slices.Equal(left, []string{"n1~a", "n1~c"}) {
		t.Fatalf("copies after keep: %v", left)
	}
}

// TestReplicaExpires: nobody resumes a dead owner's session in time: the
// unacknowledged message goes to offline storage and a late resume learns
// the handled count.
func TestReplicaExpires(t *testing.T) {
	fc := &fakeCluster{nodes: []string{"n2"}, reachable: map[string]bool{}}
	s := replicaServer(t, "n2", fc)
	createUser(t, s, "alice@example.com")
	msg := []byte("<message from='bob@example.com/x' to='alice@example.com/r' type='chat' id='m1'><body>hi</body></message>")
	apply(t, s, standbyMsg{Op: "open", ID: "n1~x", Owner: "n1", Epoch: 1, Full: "alice@example.com/r", InH: 4, Out: [][]byte{msg}, Seq: 1})
	now := time.Now()
	s.expireReplicas(now) // the owner is gone: the copy waits
	if !slices.Contains(keys(s), "n1~x") {
		t.Fatal("copy dropped before the resumption timeout")
	}
	s.expireReplicas(now.Add(s.cfg.SMResumeTimeout))
	if len(keys(s)) != 0 {
		t.Fatal("copy kept after the resumption timeout")
	}
	if !s.smDetached.endedFor("n1~x", "alice@example.com") {
		t.Fatal("the handled count of the expired copy is not kept")
	}
	if got := string(s.smDetached.failed("n1~x", "alice@example.com")); !strings.Contains(got, "h='4'") {
		t.Fatalf("late resume answer: %s", got)
	}
	msgs, err := s.store.Offline().FetchOffline(context.Background(), "alice@example.com", time.Time{})
	if err != nil || len(msgs) != 1 || !strings.Contains(string(msgs[0].Stanza), "id='m1'") {
		t.Fatalf("offline after expiry: %v %v", msgs, err)
	}
}

// replicatedSession returns a resumable session n1~x of alice on s whose
// copy n2 holds (its first snapshot is taken from fc).
func replicatedSession(t *testing.T, s *Server, fc *fakeCluster) *Session {
	t.Helper()
	sess := &Session{srv: s, full: "alice@example.com/r", bare: "alice@example.com", log: s.log}
	sess.sm = &smState{id: "n1~x", resumable: true, counting: true}
	s.smDetached.add("n1~x", sess)
	sess.mu.Lock()
	release := sess.startReplicaLocked("n2")
	sess.mu.Unlock()
	release()
	m := fc.take()
	if len(m) != 1 || m[0].kind != peerStandbyUpdate || m[0].msg.Op != "open" || m[0].node != "n2" {
		t.Fatalf("first snapshot: %+v", m)
	}
	m[0].done(nil) // n2 applied it
	return sess
}

// recorder returns a done func that appends name to the list it reports.
func recorder() (func(string) func(), func() []string) {
	var mu sync.Mutex
	var got []string
	return func(name string) func() {
			return func() { mu.Lock(); got = append(got, name); mu.Unlock() }
		}, func() []string {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(got)
		}
}

// TestReceiptOfOldStandbyHoldsSender: a stanza copied to the old standby
// counts only once the new standby confirmed its snapshot (the old one was
// told to drop its copy).
func TestReceiptOfOldStandbyHoldsSender(t *testing.T) {
	fc := &fakeCluster{nodes: []string{"n1", "n2", "n3"}, reachable: map[string]bool{"n2": true, "n3": true}}
	s := replicaServer(t, "n1", fc)
	sess := replicatedSession(t, s, fc)
	done, released := recorder()
	sess.sendThen([]byte("<message id='m1'/>"), done("m1"))
	toOld := fc.take()
	if len(toOld) != 1 || toOld[0].msg.Op != "out" {
		t.Fatalf("update: %+v", toOld)
	}
	sess.mu.Lock()
	release := sess.startReplicaLocked("n3") // the standby changes
	sess.mu.Unlock()
	release()
	snap := fc.take()
	if len(snap) != 1 || snap[0].msg.Op != "open" || snap[0].node != "n3" || len(snap[0].msg.Out) != 1 {
		t.Fatalf("snapshot to n3: %+v", snap)
	}
	toOld[0].done(nil) // n2 applied m1, but n2 is no longer the standby
	if got := released(); len(got) != 0 {
		t.Fatalf("released on the old standby's receipt: %v", got)
	}
	snap[0].done(nil)
	if got := released(); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("after n3's snapshot: %v", got)
	}
}

// TestHeldReleasedWhenSessionEnds: senders waiting for a stale copy are
// released when the session ends (its stanzas go to offline storage).
func TestHeldReleasedWhenSessionEnds(t *testing.T) {
	fc := &fakeCluster{nodes: []string{"n1", "n2"}, reachable: map[string]bool{"n2": true}}
	s := replicaServer(t, "n1", fc)
	sess := replicatedSession(t, s, fc)
	done, released := recorder()
	fc.mu.Lock()
	fc.down = true
	fc.mu.Unlock()
	sess.sendThen([]byte("<message id='m1'/>"), done("m1"))
	if got := released(); len(got) != 0 {
		t.Fatalf("released while the copy is stale: %v", got)
	}
	s.endSession(sess)
	if got := released(); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("after the session ended: %v", got)
	}
}

// TestReceiptAfterSettleCopy: settleInbound may replace the smState with
// a copy; a lost update must still mark the (new) state stale and hold
// its sender.
func TestReceiptAfterSettleCopy(t *testing.T) {
	fc := &fakeCluster{nodes: []string{"n1", "n2"}, reachable: map[string]bool{"n2": true}}
	s := replicaServer(t, "n1", fc)
	sess := replicatedSession(t, s, fc)
	done, released := recorder()
	sess.sendThen([]byte("<message id='m1'/>"), done("m1"))
	upd := fc.take()
	sess.mu.Lock()
	fresh := *sess.sm
	sess.sm = &fresh // what settleInbound does when commits are late
	sess.mu.Unlock()
	upd[0].done(errors.New("link died"))
	sess.mu.Lock()
	stale := sess.sm.standby.dirty
	sess.mu.Unlock()
	if !stale || len(released()) != 0 {
		t.Fatalf("lost update after the copy: stale=%v released=%v", stale, released())
	}
}

// TestStaleCopyHoldsSenders: an update the link could not take marks the
// copy stale; the sender waiting for it (and one that comes later) is
// released only when a fresh snapshot holding both stanzas is applied.
func TestStaleCopyHoldsSenders(t *testing.T) {
	fc := &fakeCluster{nodes: []string{"n1", "n2"}, reachable: map[string]bool{"n2": true}}
	s := replicaServer(t, "n1", fc)
	sess := replicatedSession(t, s, fc)
	var released []string
	var mu sync.Mutex
	doneFor := func(id string) func() {
		return func() { mu.Lock(); released = append(released, id); mu.Unlock() }
	}
	fc.mu.Lock()
	fc.down = true
	fc.mu.Unlock()
	sess.sendThen([]byte("<message id='m1'/>"), doneFor("m1"))
	fc.mu.Lock()
	fc.down = false
	fc.mu.Unlock()
	sess.sendThen([]byte("<message id='m2'/>"), doneFor("m2")) // stale: held, not sent
	if m := fc.take(); len(m) != 0 {
		t.Fatalf("update sent on a stale copy: %+v", m)
	}
	if len(released) != 0 {
		t.Fatalf("released before the copy has them: %v", released)
	}
	s.replicaPass("n2")
	m := fc.take()
	if len(m) != 1 || m[0].msg.Op != "open" || len(m[0].msg.Out) != 2 {
		t.Fatalf("fresh snapshot: %+v", m)
	}
	m[0].done(nil) // the standby applied it
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(released, []string{"m1", "m2"}) {
		t.Fatalf("released %v, want m1 m2", released)
	}
}

// TestReplicaBye: a node that leaves gracefully takes its copies along.
func TestReplicaBye(t *testing.T) {
	fc := &fakeCluster{nodes: []string{"n1", "n2"}, reachable: map[string]bool{"n1": true}}
	s := replicaServer(t, "n2", fc)
	apply(t, s, standbyMsg{Op: "open", ID: "n1~a", Owner: "n1", Epoch: 1, Full: "u@example.com/a", Seq: 1})
	apply(t, s, standbyMsg{Op: "open", ID: "n3~b", Owner: "n3", Epoch: 1, Full: "u@example.com/b", Seq: 1})
	apply(t, s, standbyMsg{Op: "bye", Owner: "n1", Epoch: 1})
	if got := keys(s); !slices.Equal(got, []string{"n3~b"}) {
		t.Fatalf("copies after n1's bye: %v", got)
	}
}

func keys(s *Server) []string {
	s.replicas.mu.Lock()
	defer s.replicas.mu.Unlock()
	var out []string
	for id := range s.replicas.byID {
		out = append(out, id)
	}
	return out
}

// TestResyncAfterStandbyLostCopy: an update for a copy the standby does
// not have (it restarted) makes the owner send a fresh snapshot.
func TestResyncAfterStandbyLostCopy(t *testing.T) {
	fc := &fakeCluster{nodes: []string{"n1", "n2"}, reachable: map[string]bool{"n2": true}}
	owner := replicaServer(t, "n1", fc)
	replicatedSession(t, owner, fc)
	// the standby (fresh process) gets an update for an unknown copy…
	standby := replicaServer(t, "n2", &fakeCluster{nodes: []string{"n1", "n2"}, reachable: map[string]bool{"n1": true}})
	if !standby.applyReplicaMsg(&standbyMsg{Op: "out", ID: "n1~x", Owner: "n1", Epoch: owner.standbys.epoch, Out: [][]byte{[]byte("<message/>")}}) {
		t.Fatal("an update for a missing copy is not reported")
	}
	// …and its resync makes the owner snapshot again.
	apply(t, owner, standbyMsg{Op: "resync", ID: "n1~x", Owner: "n2"})
	owner.replicaPass("n2")
	if m := fc.take(); len(m) != 1 || m[0].msg.Op != "open" {
		t.Fatalf("after resync: %+v", m)
	}
}

// TestHandedOverJIDIsForwarded: for a while after handing a session over,
// this node routes stanzas for its full JID to the new node even when the
// directory does not list it there yet.
func TestHandedOverJIDIsForwarded(t *testing.T) {
	fc := &fakeCluster{nodes: []string{"n1", "n3"}, reachable: map[string]bool{"n3": true}}
	s := replicaServer(t, "n1", fc)
	const full = "alice@example.com/r"
	if got := s.withMoved(nil, full); len(got) != 0 {
		t.Fatalf("before the move: %+v", got)
	}
	s.smDetached.moved("n1~x", full, "n3")
	got := s.withMoved(nil, full)
	if len(got) != 1 || got[0].full != full || got[0].node != "n3" {
		t.Fatalf("after the move: %+v", got)
	}
	if got := s.withMoved(nil, "alice@example.com/other"); len(got) != 0 {
		t.Fatalf("another resource: %+v", got)
	}
}

// TestResumeDropsStaleAcks: an <a/> queued for the old connection does not
// reach the resumed stream (the client would read it as the answer to the
// <r/> it sends after <resumed/>); unacked stanzas go first, other queued
// items keep their order.
func TestResumeDropsStaleAcks(t *testing.T) {
	s := replicaServer(t, "n1", &fakeCluster{reachable: map[string]bool{}})
	sess := &Session{srv: s, full: "alice@example.com/r", bare: "alice@example.com", log: s.log}
	sess.sm = &smState{id: "x", counting: true, unacked: []smItem{{seq: 4, b: []byte("<message id='u'/>")}}}
	sess.mu.Lock()
	sess.ackOutLocked(3)
	sess.out = append(sess.out, outItem{b: []byte("<message id='q'/>"), stanza: true})
	sess.requeueForResumeLocked()
	var got []string
	for _, it := range sess.out {
		got = append(got, string(it.b))
	}
	sess.mu.Unlock()
	want := []string{"<message id='u'/>", "<message id='q'/>"}
	if !slices.Equal(got, want) {
		t.Fatalf("queue after resume: %q, want %q", got, want)
	}
}
