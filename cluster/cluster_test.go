package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/testutil"
)

// recHandler records every handler call (it is all three handlers).
type recHandler struct {
	mu          sync.Mutex
	stanzas     map[string][]byte
	gone        []Session
	updates     int
	conflicts   []string
	undelivered []string
	controls    []controlMsg
}

// controlMsg is one HandleControl call.
type controlMsg struct {
	from string
	kind byte
	msg  []byte
}

// kindNoAck is a control kind recHandler never acks.
const kindNoAck = 99

func newRec() *recHandler { return &recHandler{stanzas: map[string][]byte{}} }

// all returns h as every handler of a Cluster.
func (h *recHandler) all() Handlers { return Handlers{Stanzas: h, Directory: h, Control: h} }

// HandleControl records the message and acks it unless its kind is
// kindNoAck.
func (h *recHandler) HandleControl(from string, kind byte, msg []byte, ack func()) {
	h.mu.Lock()
	h.controls = append(h.controls, controlMsg{from, kind, msg})
	h.mu.Unlock()
	if kind != kindNoAck {
		ack()
	}
}

func (h *recHandler) controlList() []controlMsg {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]controlMsg(nil), h.controls...)
}

func (h *recHandler) HandleStanza(to string, s []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stanzas[to] = s
}

func (h *recHandler) HandleSessionsGone(g []Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gone = append(h.gone, g...)
}

func (h *recHandler) HandleSessionUpdate(Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.updates++
}

func (h *recHandler) HandleConflict(j string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.conflicts = append(h.conflicts, j)
}

func (h *recHandler) HandleUndelivered(to string, _ []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.undelivered = append(h.undelivered, to)
}

// HandleStanzaAcked records the stanza and acks it unless its target
// starts with "noack".
func (h *recHandler) HandleStanzaAcked(to string, s []byte, ack func()) {
	h.HandleStanza(to, s)
	if !strings.HasPrefix(to, "noack") {
		ack()
	}
}

func (h *recHandler) goneFrom(node string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, g := range h.gone {
		if g.Node == node {
			n++
		}
	}
	return n
}

func (h *recHandler) conflictList() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.conflicts...)
}

// testKey is random bytes, as a real key must be (CheckKey refuses text).
var testKey = []byte("\x70\x3b\x6d\x00\x61\x15\x86\x2a\xa7\x2c\xd6\x24\x7e\x57\x30\x89" +
	"\xcb\x99\x4b\x93\x0e\x8c\xd8\x47\x7f\x8c\x82\x35\x71\xe2\x08\xb7")

type tnode struct {
	*Cluster
	h *recHandler
}

func (n tnode) gossipAddr() string { return n.memberlist().LocalNode().Address() }

func (n tnode) linkCount() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.links)
}

func startNode(t testing.TB, name string, mutate func(*Config), seeds ...string) tnode {
	t.Helper()
	return startNodeHook(t, name, mutate, nil, seeds...)
}

// startNodeHook is startNode with a hook that may alter the Cluster between
// New and Start.
func startNodeHook(t testing.TB, name string, mutate func(*Config), hook func(*Cluster), seeds ...string) tnode {
	t.Helper()
	cfg := DefaultLocalConfig()
	cfg.NodeName = name
	cfg.SecretKey = testKey
	cfg.Label = "xcollect-test"
	cfg.Join = seeds
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Str("node", name).Logger()
	if mutate != nil {
		mutate(&cfg)
	}
	h := newRec()
	c, err := New(cfg, h.all())
	if err != nil {
		t.Fatalf("New %s: %v", name, err)
	}
	if hook != nil {
		hook(c)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("Start %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown %s: %v", name, err)
		}
	})
	return tnode{c, h}
}

// startCluster starts n nodes joined to the first and waits for full
// membership and links.
func startCluster(t testing.TB, n int, mutate func(*Config)) []tnode {
	t.Helper()
	nodes := []tnode{startNode(t, "n0", mutate)}
	for i := 1; i < n; i++ {
		nodes = append(nodes, startNode(t, fmt.Sprintf("n%d", i), mutate, nodes[0].gossipAddr()))
	}
	waitConnected(t, nodes)
	return nodes
}

func waitConnected(t testing.TB, nodes []tnode) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "membership and links", func() bool {
		for _, n := range nodes {
			if len(n.Nodes()) != len(nodes) || n.linkCount() != len(nodes)-1 {
				return false
			}
		}
		return true
	})
}

func TestClusterDirectoryAndRoute(t *testing.T) {
	ns := startCluster(t, 3, nil)
	a, b, c := ns[0], ns[1], ns[2]

	a.UpsertLocal(Session{JID: "alice@x/phone", Available: true, Show: "away", Priority: 5})
	b.UpsertLocal(Session{JID: "alice@x/desk", Available: true})
	c.UpsertLocal(Session{JID: "bob@x/r", Available: true})
	took := testutil.WaitFor(t, time.Second, "deltas converge", func() bool {
		return a.DirectorySize() == 3 && b.DirectorySize() == 3 && c.DirectorySize() == 3
	})
	t.Logf("3 deltas converged on 3 nodes in %v", took)

	got := c.Lookup("alice@x")
	if len(got) != 2 {
		t.Fatalf("Lookup(alice@x) on c = %v, want 2 entries", got)
	}
	if s, ok := c.LookupFull("alice@x/phone"); !ok || s.Node != "n0" || s.Show != "away" || s.Priority != 5 {
		t.Fatalf("LookupFull = %+v %v", s, ok)
	}
	if l := a.Lookup("alice@x"); len(l) != 1 || l[0].Node != "n1" {
		t.Fatalf("Lookup on a must hold only remote entries, got %v", l)
	}

	// Route a stanza a -> c.
	if err := a.Route("n2", "bob@x/r", []byte("<message/>")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "stanza routed", func() bool {
		c.h.mu.Lock()
		defer c.h.mu.Unlock()
		return bytes.Equal(c.h.stanzas["bob@x/r"], []byte("<message/>"))
	})
	if err := a.Route("nope", "x@y", nil); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("Route to unknown node: %v", err)
	}

	// Presence change and removal.
	a.UpsertLocal(Session{JID: "alice@x/phone", Available: true, Show: "dnd"})
	testutil.WaitFor(t, time.Second, "presence update", func() bool {
		s, _ := b.LookupFull("alice@x/phone")
		return s.Show == "dnd"
	})
	a.RemoveLocal("alice@x/phone")
	testutil.WaitFor(t, time.Second, "tombstone", func() bool {
		_, okb := b.LookupFull("alice@x/phone")
		_, okc := c.LookupFull("alice@x/phone")
		return !okb && !okc && b.h.goneFrom("n0") == 1
	})
}

func TestCrashedNodeSessionsDropped(t *testing.T) {
	ns := startCluster(t, 3, nil)
	a, b, c := ns[0], ns[1], ns[2]
	for i := range 50 {
		c.UpsertLocal(Session{JID: fmt.Sprintf("u%d@x/r", i), Available: true})
	}
	testutil.WaitFor(t, 2*time.Second, "sessions replicated", func() bool {
		return a.DirectorySize() == 50 && b.DirectorySize() == 50
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.stop(ctx, false); err != nil { // crash: no Leave
		t.Fatal(err)
	}
	took := testutil.WaitFor(t, 10*time.Second, "dead node's sessions dropped", func() bool {
		return a.DirectorySize() == 0 && b.DirectorySize() == 0 &&
			a.h.goneFrom("n2") == 50 && b.h.goneFrom("n2") == 50
	})
	t.Logf("crash detected and sessions dropped after %v (n=3, DefaultLocalConfig)", time.Since(start))
	if took > 8*time.Second {
		t.Errorf("dead-node detection took %v", took)
	}
	if err := a.Route("n2", "u1@x/r", []byte("<m/>")); err == nil {
		t.Fatal("Route to dead node succeeded")
	}
}

func TestGracefulLeaveAndRejoinWithStaleEntries(t *testing.T) {
	ns := startCluster(t, 2, nil)
	a := ns[0]
	b := ns[1]
	b.UpsertLocal(Session{JID: "old@x/r", Available: true})
	testutil.WaitFor(t, time.Second, "replicated", func() bool { return a.DirectorySize() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "left node dropped", func() bool { return a.DirectorySize() == 0 })

	// Same name, new process, new ports, a different session set.
	b2 := startNode(t, "n1", nil, a.gossipAddr())
	b2.UpsertLocal(Session{JID: "new@x/r", Available: true})
	testutil.WaitFor(t, 5*time.Second, "rejoined node's sessions", func() bool {
		_, okNew := a.LookupFull("new@x/r")
		_, okOld := a.LookupFull("old@x/r")
		return okNew && !okOld
	})
}

func TestConflictLaterBindWins(t *testing.T) {
	ns := startCluster(t, 2, nil)
	a, b := ns[0], ns[1]
	a.UpsertLocal(Session{JID: "carol@x/r", Available: true})
	testutil.WaitFor(t, time.Second, "a's entry on b", func() bool { _, ok := b.LookupFull("carol@x/r"); return ok })
	b.UpsertLocal(Session{JID: "carol@x/r", Available: true})
	testutil.WaitFor(t, time.Second, "conflict on a", func() bool {
		c := a.h.conflictList()
		return len(c) == 1 && c[0] == "carol@x/r"
	})
	if c := b.h.conflictList(); len(c) != 0 {
		t.Fatalf("later binder got conflict %v", c)
	}
	// b's newer presence updates do not re-kick.
	b.UpsertLocal(Session{JID: "carol@x/r", Available: true, Show: "away"})
	testutil.WaitFor(t, time.Second, "update", func() bool { s, _ := a.LookupFull("carol@x/r"); return s.Show == "away" })
	if c := a.h.conflictList(); len(c) != 1 {
		t.Fatalf("conflicts = %v, want one", c)
	}
	// a dropped its entry on the conflict, without a tombstone (one could
	// reach a third node before b's entry): the server's RemoveLocal for
	// the closed session sends none either, and b's entry is the one a
	// sees. The digest exchange removes a's old entry from b's directory
	// (TestForgetLocalRepairedByDigest).
	a.RemoveLocal("carol@x/r")
	time.Sleep(300 * time.Millisecond)
	if n := b.h.goneFrom("n0"); n != 0 {
		t.Fatalf("a sent %d tombstones after the conflict", n)
	}
	if s, ok := a.LookupFull("carol@x/r"); !ok || s.Node != "n1" {
		t.Fatalf("a lost b's entry: %+v %v", s, ok)
	}
}

func TestSnapshotOnReconnect(t *testing.T) {
	ns := startCluster(t, 2, func(c *Config) { c.PushPullInterval = time.Hour })
	a, b := ns[0], ns[1]
	b.dropDeltas.Store(true)
	b.UpsertLocal(Session{JID: "dave@x/r", Available: true})
	b.UpsertLocal(Session{JID: "erin@x/r", Available: true})
	b.dropDeltas.Store(false)
	if a.DirectorySize() != 0 {
		t.Fatal("dropped deltas arrived")
	}
	// Break the link; the dialer (n0 < n1) reconnects and both send snapshots.
	a.mu.RLock()
	old := a.links["n1"]
	a.mu.RUnlock()
	if err := old.conn.Close(); err != nil {
		t.Fatal(err)
	}
	took := testutil.WaitFor(t, 5*time.Second, "snapshot after reconnect", func() bool { return a.DirectorySize() == 2 })
	t.Logf("link reconnect + snapshot in %v", took)
}

func TestDigestRepairAfterDroppedDelta(t *testing.T) {
	ns := startCluster(t, 3, func(c *Config) {
		c.PushPullInterval = 300 * time.Millisecond
		c.repairGrace = 300 * time.Millisecond
	})
	a, b := ns[0], ns[1]
	b.UpsertLocal(Session{JID: "fay@x/1", Available: true})
	testutil.WaitFor(t, time.Second, "first delta", func() bool { return a.DirectorySize() == 1 })
	a.mu.RLock()
	linkBefore := a.links["n1"]
	a.mu.RUnlock()

	b.dropDeltas.Store(true)
	b.UpsertLocal(Session{JID: "fay@x/2", Available: true})
	b.RemoveLocal("fay@x/1")
	b.dropDeltas.Store(false)
	took := testutil.WaitFor(t, 10*time.Second, "digest repair", func() bool {
		_, ok1 := a.LookupFull("fay@x/1")
		_, ok2 := a.LookupFull("fay@x/2")
		_, ok3 := ns[2].LookupFull("fay@x/2")
		return !ok1 && ok2 && ok3
	})
	t.Logf("dropped delta repaired by digest in %v (push/pull 300ms, grace 300ms)", took)
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.links["n1"] != linkBefore {
		t.Fatal("repair went through a reconnect, not the digest")
	}
}

func TestLoadSteering(t *testing.T) {
	ns := startCluster(t, 3, func(c *Config) { c.Meta.C2S = "c2s.example:5222" })
	ns[0].SetLoad(Load{Sessions: 900, CPU: 0.5})
	ns[1].SetLoad(Load{Sessions: 100, CPU: 0.1})
	ns[2].SetLoad(Load{Sessions: 200, CPU: 0.1})
	testutil.WaitFor(t, 5*time.Second, "loads gossiped", func() bool {
		for _, n := range ns {
			nodes := n.Nodes()
			if len(nodes) != 3 || nodes[0].Load.Sessions != 900 || nodes[1].Load.Sessions != 100 || nodes[2].Load.Sessions != 200 {
				return false
			}
		}
		return true
	})
	for _, n := range ns {
		ll, ok := n.LeastLoaded()
		if !ok || ll.Name != "n1" || ll.C2S != "c2s.example:5222" {
			t.Fatalf("%s: LeastLoaded = %+v %v", n.Name(), ll, ok)
		}
	}
	above := Steering{Margin: 0.2, MinSessions: 500}
	if tgt, ok := ns[0].ShouldSteer(above); !ok || tgt.Name != "n1" {
		t.Fatalf("ShouldSteer on overloaded node = %+v %v", tgt, ok)
	}
	if _, ok := ns[1].ShouldSteer(above); ok {
		t.Fatal("lightest node steers")
	}
	if _, ok := ns[2].ShouldSteer(above); ok {
		t.Fatal("node under average steers")
	}
	// Below the absolute floor nothing is steered, however uneven.
	if tgt, ok := ns[0].ShouldSteer(Steering{Margin: 0.2, MinSessions: 901}); ok {
		t.Fatalf("node below the floor steers to %+v", tgt)
	}
	// The default floor (thousands of sessions) keeps a light cluster still.
	if tgt, ok := ns[0].ShouldSteer(Steering{Margin: 0.2}); ok {
		t.Fatalf("node with 900 sessions steers to %+v under the default floor", tgt)
	}
}

func TestNodeMetaSizeValidated(t *testing.T) {
	cfg := DefaultLocalConfig()
	cfg.NodeName = "big"
	cfg.SecretKey = testKey
	cfg.Meta.C2S = strings.Repeat("a", 300)
	cfg.Meta.HTTP = strings.Repeat("b", 200)
	_, err := New(cfg, newRec().all())
	if !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("New with 500-byte addresses: %v", err)
	}
	t.Log(err)
	cfg.Meta.HTTP = "b:80"
	if _, err := New(cfg, newRec().all()); err != nil {
		t.Fatalf("New with small meta: %v", err)
	}
	cfg.SecretKey = []byte("short")
	if _, err := New(cfg, newRec().all()); err == nil || !strings.Contains(err.Error(), "secret key") {
		t.Fatalf("bad key length: %v", err)
	}
}

func TestWrongSecretKeyLinkRefused(t *testing.T) {
	a := startNode(t, "n0", nil)
	linkAddr := a.meta.Link
	wrong := []byte("fedcba9876543210fedcba9876543210")
	wrongTLS, err := newLinkTLS(wrong)
	if err != nil {
		t.Fatal(err)
	}
	rightTLS, err := newLinkTLS(testKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		key     []byte
		lt      *linkTLS
		wantErr error // nil: any error
	}{
		{"wrong key", wrong, wrongTLS, ErrAuth},
		{"no key", nil, nil, nil},
		{"right key without TLS", testKey, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", linkAddr, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_, err = dialLink(context.Background(), conn, tc.lt, tc.key, "intruder", "n0")
			if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Fatalf("handshake with %s: %v", tc.name, err)
			}
			t.Logf("%s: %v", tc.name, err)
		})
	}
	if a.linkCount() != 0 {
		t.Fatal("refused peer got a link")
	}
	// Control: the right key passes the proof, and then meets the
	// membership check (a stranger is not a member).
	conn, err := net.DialTimeout("tcp", linkAddr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := dialLink(context.Background(), conn, rightTLS, testKey, "friend", "n0"); !errors.Is(err, ErrNotMember) {
		t.Fatalf("right key, not a member: %v, want ErrNotMember", err)
	}
	if a.linkCount() != 0 {
		t.Fatal("non-member got a link")
	}
}

func TestHandshakeUnit(t *testing.T) {
	k2 := []byte("fedcba9876543210")
	for _, tc := range []struct {
		name       string
		dial, acc  []byte
		wantAccept bool
	}{
		{"same key", testKey, testKey, true},
		{"no keys", nil, nil, true},
		{"wrong key", k2, testKey, false},
		{"dialer without key", nil, testKey, false},
		{"acceptor without key", testKey, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c1, c2 := net.Pipe()
			defer c1.Close()
			defer c2.Close()
			errc := make(chan error, 1)
			go func() {
				_, err := acceptHandshake(c2, tc.acc, "acc", nil)
				if err != nil {
					c2.Close()
				}
				errc <- err
			}()
			derr := dialHandshake(c1, tc.dial, "dial", "acc")
			if derr != nil {
				c1.Close() // as dialOnce does
			}
			var aerr error
			select {
			case aerr = <-errc:
			case <-time.After(5 * time.Second):
				t.Fatal("acceptor hung")
			}
			if tc.wantAccept && (derr != nil || aerr != nil) {
				t.Fatalf("dial %v, accept %v", derr, aerr)
			}
			if !tc.wantAccept && (derr == nil || aerr == nil) {
				t.Fatalf("want refusal on both sides: dial %v, accept %v", derr, aerr)
			}
		})
	}
}

func TestUndeliveredReportedWhenLinkDies(t *testing.T) {
	l, _ := pipeLink(t)
	for i := range 4 {
		if err := l.enqueue(outFrame{typ: frameStanza, to: fmt.Sprintf("u%d@x", i), body: []byte("<m/>")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.enqueue(outFrame{typ: frameStanza, to: "full@x"}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("full queue: %v", err)
	}
	l.close() // the link dies before the writer ran
	if err := l.enqueue(outFrame{typ: frameStanza, to: "late@x"}); !errors.Is(err, ErrLinkDown) {
		t.Fatalf("closed link: %v", err)
	}
	got := l.writeLoop(func() []byte { return nil })
	if len(got) != 4 {
		t.Fatalf("undelivered = %d frames, want 4", len(got))
	}
}

// TestRouteAcked: the receipt of an acked stanza comes back when the peer
// handled it; when the link dies first, the receipt fails.
func TestRouteAcked(t *testing.T) {
	ns := startCluster(t, 2, nil)
	a, b := ns[0], ns[1]
	got := make(chan error, 2)
	if err := a.RouteAcked("n1", "bob@x/r", []byte("<message id='1'/>"), func(err error) { got <- err }); err != nil {
		t.Fatal(err)
	}
	wantReceipt(t, got)
	b.h.mu.Lock()
	arrived := bytes.Equal(b.h.stanzas["bob@x/r"], []byte("<message id='1'/>"))
	b.h.mu.Unlock()
	if !arrived {
		t.Fatal("stanza not handed to the peer's handler")
	}
	// The peer never acks this one; its node goes away: the receipt fails.
	if err := a.RouteAcked("n1", "noack@x/r", []byte("<message id='2'/>"), func(err error) { got <- err }); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "stanza at the peer", func() bool {
		b.h.mu.Lock()
		defer b.h.mu.Unlock()
		return b.h.stanzas["noack@x/r"] != nil
	})
	wantReceiptFailsWhenPeerStops(t, b, got)
}

func TestRouteQueueFullAndLinkDown(t *testing.T) {
	ns := startCluster(t, 2, func(c *Config) { c.LinkQueue = 1 })
	a := ns[0]
	var full bool
	for range 10000 {
		if err := a.Route("n1", "x@y", make([]byte, 4096)); errors.Is(err, ErrQueueFull) {
			full = true
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("queue never reported full")
	}
}

func TestConverge10k(t *testing.T) {
	const n = 10000
	ns := startCluster(t, 3, nil)
	for i := range n {
		ns[i%3].UpsertLocal(Session{JID: fmt.Sprintf("user%05d@collect.example.com/device-%d", i, i%7), Available: true, Show: "chat", Priority: 1})
	}
	testutil.WaitFor(t, 10*time.Second, "10k on the first nodes", func() bool {
		return ns[0].DirectorySize() == n && ns[1].DirectorySize() == n && ns[2].DirectorySize() == n
	})
	snap := ns[0].snapshotFrame()
	ns[0].localMu.Lock()
	own := len(ns[0].local)
	ns[0].localMu.Unlock()
	t.Logf("snapshot: %d bytes for %d entries = %.1f B/entry (JIDs ~39 B)", len(snap), own, float64(len(snap))/float64(own))

	d := startNode(t, "n9", nil, ns[0].gossipAddr())
	took := testutil.WaitFor(t, 10*time.Second, "new node converges", func() bool { return d.DirectorySize() == n })
	t.Logf("new node converged to %d sessions in %v (join + 3 link snapshots)", n, took)
}

func BenchmarkConverge10k(b *testing.B) {
	const n = 10000
	ns := startCluster(b, 2, nil)
	for i := range n {
		ns[i%2].UpsertLocal(Session{JID: fmt.Sprintf("user%05d@collect.example.com/device", i), Available: true})
	}
	testutil.WaitFor(b, 10*time.Second, "seed nodes", func() bool { return ns[1].DirectorySize() == n })
	perEntry := float64(len(ns[0].snapshotFrame())) / float64(n/2)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		d := startNode(b, fmt.Sprintf("new%d", i), nil, ns[0].gossipAddr())
		testutil.WaitFor(b, 10*time.Second, "converge", func() bool { return d.DirectorySize() == n })
		b.StopTimer()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := d.Shutdown(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		b.StartTimer()
	}
	b.ReportMetric(perEntry, "snapshot-B/entry")
}

// TestForgetLocalRepairedByDigest: a local entry replaced by another node's
// newer one is dropped without a tombstone; lookups prefer the newer entry
// meanwhile, and the digest exchange removes the old one everywhere.
func TestForgetLocalRepairedByDigest(t *testing.T) {
	ns := startCluster(t, 3, func(c *Config) {
		c.PushPullInterval = 300 * time.Millisecond
		c.repairGrace = 300 * time.Millisecond
	})
	a, b, c := ns[0], ns[1], ns[2]
	b.UpsertLocal(Session{JID: "gil@x/1", Available: true})
	testutil.WaitFor(t, 2*time.Second, "b's entry everywhere", func() bool {
		_, ok := a.LookupFull("gil@x/1")
		return ok
	})
	c.UpsertLocal(Session{JID: "gil@x/1", Available: true}) // the session moved to c
	b.ForgetLocal("gil@x/1")
	testutil.WaitFor(t, 2*time.Second, "c's newer entry wins at a", func() bool {
		s, ok := a.LookupFull("gil@x/1")
		return ok && s.Node == c.Name()
	})
	if d, _ := a.dir.digestOf(b.Name()); d.Count != 1 {
		t.Fatalf("a's view of b right after the move: %d live entries, want the old one still there", d.Count)
	}
	took := testutil.WaitFor(t, 10*time.Second, "b's old entry gone at a", func() bool {
		d, _ := a.dir.digestOf(b.Name())
		return d.Count == 0
	})
	t.Logf("old entry removed by the digest exchange in %v", took)
	if s, ok := a.LookupFull("gil@x/1"); !ok || s.Node != c.Name() {
		t.Fatalf("after repair: %+v %v", s, ok)
	}
}
