package server

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"xcollect.dev/xcollect/internal/wire"
)

// Replication of XEP-0198 state, so that a client whose node died resumes
// on another one. Each node copies the stream management state of its
// resumable sessions to one standby node (the next reachable node after it
// in name order) over the node links, as control messages to peerReplica:
//
//	open   a snapshot: full JID, handled count, presence, and the outbound
//	       stanzas the client has not acknowledged (with the sequence
//	       number before the first of them)
//	out    one stanza queued for the client
//	ack    the client acknowledged outbound stanzas up to h
//	in     the handled count of the client's stanzas
//	pres   the session's presence changed
//	close  the session ended or moved: forget it
//	keep   the ids the owner still copies here: forget the others opened
//	       before (sent after a lost update or a change of standby)
//	hello  the owner's start time (a restarted owner has a new one)
//	bye    the owner shuts down gracefully: drop all its copies
//	resync (standby → owner) an update came for a copy it does not have
//
// Two rules make the copy good enough to resume from: a stanza queued to a
// replicated session counts as handled for its sender only once the standby
// confirmed its copy (sendThen), and an <a h/> goes to the client only
// once the standby has that h (queueAck). So when the owner dies, the
// standby's copy holds every stanza the client may not have received, and a
// handled count no lower than the one the client was last told.
//
// A client that resumes after its node died asks, through whichever node
// it reaches, the named owner first; when the owner is unreachable or does
// not know the id, every node is asked for a copy (takeoverReq.Replica).
// The standby hands it over only while the owner is dead or restarted, so
// a live session is never resumed twice. When nobody resumes within the
// resumption timeout, the standby stores the stanzas offline and remembers
// the handled count, so a late <resume/> gets <failed h/>.
//
// Limits, as built: the handled count in the copy is the one of the last
// <a/> the client got (or of the detach), so a client that resumes from a
// copy may resend stanzas the dead node had already handled after that
// (reports with an XEP-0359 origin-id are dropped by the queue's dedupe;
// other reports and chat messages can arrive twice); when the owner and its standby die together the session is lost
// (<failed/> without h). An update that cannot be queued (link down or full)
// marks the session for a fresh snapshot on the next tick.

const peerReplica = "@sm-rep"

// replicaTick is how often a node checks its standby and its copies.
const replicaTick = time.Second

type repMsg struct {
	Op    string       `json:"op"`
	ID    string       `json:"id"`
	Owner string       `json:"owner"`
	Epoch int64        `json:"epoch"`
	Full  string       `json:"full,omitempty"`
	Base  uint32       `json:"base,omitempty"` // open: outbound sequence number before Out[0]
	Out   [][]byte     `json:"out,omitempty"`  // open: the FIFO; out: one stanza
	InH   uint32       `json:"in_h,omitempty"`
	H     uint32       `json:"h,omitempty"` // ack and in
	Pres  *repPresence `json:"pres,omitempty"`
	Seq   uint64       `json:"seq,omitempty"` // open: the owner's snapshot number; keep: the last one before IDs were listed
	IDs   []string     `json:"ids,omitempty"` // keep
}

type repPresence struct {
	Available bool   `json:"available,omitempty"`
	Priority  int    `json:"priority,omitempty"`
	Show      string `json:"show,omitempty"`
	Status    string `json:"status,omitempty"`
	Presence  []byte `json:"presence,omitempty"`
	Roster    bool   `json:"roster,omitempty"`
}

// replica is a standby's copy of another node's session.
type replica struct {
	id, owner, full, bare string
	epoch                 int64
	inH, base             uint32
	fifo                  [][]byte // outbound stanzas base+1, base+2, …
	pres                  repPresence
	seq                   uint64    // of the snapshot it started from
	orphaned              time.Time // when the owner was first seen dead or restarted
}

// replicaTable holds the copies this node keeps for others.
type replicaTable struct {
	mu     sync.Mutex
	byID   map[string]*replica
	epochs map[string]int64 // owner → newest start time seen
}

// --- owner side -------------------------------------------------------

// currentStandby is the standby replicaLoop chose at its last pass: a
// session enabling XEP-0198 takes it without walking the membership (a
// login-rate path). Before the first pass it is computed.
func (s *Server) currentStandby() string {
	if v, ok := s.standby.Load().(string); ok && v != "" {
		return v
	}
	return s.standbyNode()
}

// standbyNode returns the node that should hold copies of this node's
// sessions: the next reachable node after this one in name order.
func (s *Server) standbyNode() string {
	if s.cluster == nil {
		return ""
	}
	nodes := s.cluster.Nodes()
	self := -1
	for i, n := range nodes {
		if n == s.cfg.NodeName {
			self = i
		}
	}
	for k := 1; k < len(nodes); k++ {
		n := nodes[(self+k+len(nodes))%len(nodes)]
		if n != s.cfg.NodeName && s.cluster.Reachable(n) {
			return n
		}
	}
	return ""
}

// repLocked sends m about s's session to its standby, with a receipt: an
// update the link loses (it died, or its queue was full) marks the copy
// stale, and replicaLoop replaces it with a fresh snapshot at once. done,
// if not nil, runs once the copy on the current standby surely holds m:
// m was applied after a confirmed snapshot of the same generation, or a
// later snapshot (which carries m) was confirmed. repLocked reports
// whether done will run; false means no copy is kept (no standby, or the
// node is leaving) and the caller goes on at once. Called with s.mu held.
func (s *Session) repLocked(m *repMsg, done func()) bool {
	sm := s.sm
	if sm == nil || sm.rep == "" || s.srv.leaving.Load() {
		return false
	}
	if sm.repDirty {
		if done == nil {
			return false // the snapshot carries it
		}
		sm.repHeld = append(sm.repHeld, done)
		return true
	}
	id, gen := sm.id, sm.repGen
	m.ID, m.Owner, m.Epoch = id, s.srv.cfg.NodeName, s.srv.epoch
	b, err := json.Marshal(m)
	if err != nil {
		return false
	}
	err = s.srv.cluster.RouteAcked(sm.rep, peerReplica, b, func(err error) {
		s.mu.Lock()
		cur := s.curSMLocked(id)
		switch {
		case cur == nil:
			// ended or handed over: its stanzas went offline or along
		case err != nil:
			if cur.repGen == gen {
				s.staleLocked()
			}
			cur.repHeld, done = appendDone(cur.repHeld, done), nil
		case cur.repGen != gen || cur.repOK != gen || cur.repDirty:
			// applied, but to a copy that is not (yet) the confirmed one
			cur.repHeld, done = appendDone(cur.repHeld, done), nil
		}
		s.mu.Unlock()
		if done != nil {
			done()
		}
	})
	if err != nil {
		s.staleLocked()
		if done == nil {
			return false
		}
		sm.repHeld = append(sm.repHeld, done)
	}
	return true
}

func appendDone(list []func(), done func()) []func() {
	if done == nil {
		return list
	}
	return append(list, done)
}

// curSMLocked returns the session's stream management state if it is
// still the one named id and the session lives (settleInbound may have
// replaced the struct with a copy). Called with s.mu held.
func (s *Session) curSMLocked(id string) *smState {
	if s.ended || s.sm == nil || s.sm.id != id {
		return nil
	}
	return s.sm
}

// takeHeldLocked returns the senders and acks waiting for a copy, for a
// session that ends or moves: they run once the caller dropped s.mu (the
// session's stanzas go to offline storage or along with it).
func (s *Session) takeHeldLocked() func() {
	if s.sm == nil || len(s.sm.repHeld) == 0 {
		return noop
	}
	held := s.sm.repHeld
	s.sm.repHeld = nil
	return func() {
		for _, done := range held {
			done()
		}
	}
}

// staleLocked marks the copy as missing an update and wakes replicaLoop.
func (s *Session) staleLocked() {
	s.sm.repDirty = true
	s.srv.repDirty.Store(true)
	select {
	case s.srv.repKick <- struct{}{}:
	default:
	}
}

// presLocked returns the session's presence for a copy.
func (s *Session) presLocked() *repPresence {
	return &repPresence{Available: s.available, Priority: s.priority, Show: s.show, Status: s.status,
		Presence: s.presence, Roster: s.rosterRequested}
}

// snapshotLocked describes the session in full for a new standby.
func (s *Session) snapshotLocked() *repMsg {
	sm := s.sm
	m := &repMsg{Op: "open", Full: s.full, InH: sm.inH, Pres: s.presLocked(), Seq: s.srv.repSeq.Add(1)}
	m.Base = sm.outSent - uint32(len(sm.unacked))
	for _, it := range sm.unacked {
		m.Out = append(m.Out, it.b)
	}
	counting := sm.counting
	for _, it := range s.out {
		if it.enabled {
			counting = true
		} else if it.stanza && counting {
			m.Out = append(m.Out, it.b)
		}
	}
	return m
}

// startReplicaLocked sends a snapshot of the session to standby, which
// holds its copy from now on. The senders and acks that waited for a
// stale copy are released once the snapshot is applied (or at once when
// there is no standby): the returned function releases them when the
// caller has dropped s.mu. Called with s.mu held.
func (s *Session) startReplicaLocked(standby string) (release func()) {
	sm := s.sm
	old := sm.rep
	held := sm.repHeld
	sm.repGen++
	gen, id := sm.repGen, sm.id
	sm.rep, sm.repDirty, sm.repHeld = standby, false, nil
	if old != "" && old != standby {
		b, err := json.Marshal(&repMsg{Op: "close", ID: sm.id, Owner: s.srv.cfg.NodeName, Epoch: s.srv.epoch})
		if err == nil {
			_ = s.srv.cluster.Route(old, peerReplica, b) // best effort: a copy of an alive owner is also dropped by keep
		}
	}
	runHeld := func() {
		for _, done := range held {
			done()
		}
	}
	if standby == "" || s.srv.leaving.Load() {
		sm.repOK = gen // no copy is kept: nothing to wait for
		return runHeld
	}
	m := s.snapshotLocked()
	m.ID, m.Owner, m.Epoch = id, s.srv.cfg.NodeName, s.srv.epoch
	b, err := json.Marshal(m)
	if err == nil {
		err = s.srv.cluster.RouteAcked(standby, peerReplica, b, func(err error) {
			s.mu.Lock()
			cur := s.curSMLocked(id)
			release := noop
			switch {
			case cur == nil:
				// ended or handed over: nothing to wait for
			case err != nil:
				if cur.repGen == gen {
					s.staleLocked()
				}
				cur.repHeld, held = append(cur.repHeld, held...), nil
			case cur.repGen != gen:
				// applied to a standby that was replaced since: wait for
				// the newer snapshot
				cur.repHeld, held = append(cur.repHeld, held...), nil
			case !cur.repDirty:
				// the copy holds everything queued up to now
				cur.repOK = gen
				release = s.takeHeldLocked()
			}
			s.mu.Unlock()
			runHeld()
			release()
		})
	}
	if err != nil {
		s.staleLocked()
		sm.repHeld = append(sm.repHeld, held...)
	}
	return noop
}

// sendThen is send for a stanza whose sender waits until it is safe: done
// runs once the stanza is queued here and, for a replicated session, copied
// to the standby.
func (s *Session) sendThen(b []byte, done func()) {
	s.enqueue(b, true, done)
}

// queueAckLocked answers an <r/> with h, once the standby has h. While
// one copy of the count is on its way, later answers wait and go out
// together with the next one (one link round trip per burst of <r/>, not
// per <r/>). Called with s.mu held.
func (s *Session) queueAckLocked(h uint32) {
	sm := s.sm
	if sm.inFlight {
		sm.inNext, sm.inWait = h, true
		return
	}
	if s.repLocked(&repMsg{Op: "in", H: h}, func() {
		s.mu.Lock()
		if s.sm == sm {
			sm.inFlight = false
			s.ackOutLocked(h)
			if sm.inWait {
				sm.inWait = false
				s.queueAckLocked(sm.inNext)
			}
		}
		s.mu.Unlock()
	}) {
		sm.inFlight = true
		return
	}
	s.ackOutLocked(h)
}

// ackOutLocked queues <a h/> unless a higher h went out already (a copied
// answer can return after a later direct one).
func (s *Session) ackOutLocked(h uint32) {
	sm := s.sm
	if sm.ackOut && before(h, sm.ackSent) {
		return
	}
	sm.ackSent, sm.ackOut = h, true
	s.out = append(s.out, outItem{b: wire.Ack(h), ack: true})
	s.notify()
}

// replicaLoop keeps each local session's copy on the current standby and
// expires copies whose owner died.
func (s *Server) replicaLoop() {
	t := time.NewTicker(replicaTick)
	defer t.Stop()
	last := ""
	var lastExpiry time.Time
	for {
		if !s.leaving.Load() {
			last = s.replicaPass(last)
		}
		if now := time.Now(); now.Sub(lastExpiry) >= replicaTick {
			s.expireReplicas(now)
			lastExpiry = now
		}
		select {
		case <-s.loops.Done():
			return
		case <-t.C:
		case <-s.repKick:
			// an update was lost: snapshot soon, but no busy loop while
			// the standby's link is down
			select {
			case <-s.loops.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// replicaPass moves the copies to the current standby when it changed
// (last is the previous one) and replaces stale ones; it returns the
// standby.
func (s *Server) replicaPass(last string) string {
	standby := s.standbyNode()
	s.standby.Store(standby)
	if standby != last || s.repDirty.Swap(false) {
		seq := s.repSeq.Load()
		var ids []string
		// Every resumable session, attached or detached, is in smDetached
		// before its first snapshot is sent.
		for _, sess := range s.smDetached.list() {
			sess.mu.Lock()
			release := noop
			if sm := sess.sm; sm != nil && sm.resumable && !sess.ended {
				if sm.rep != standby || sm.repDirty {
					release = sess.startReplicaLocked(standby)
				}
				ids = append(ids, sm.id)
			}
			sess.mu.Unlock()
			release()
		}
		if standby != "" {
			// Copies of sessions that ended while an update was lost
			// would otherwise wait for this node's death.
			b, err := json.Marshal(&repMsg{Op: "keep", Owner: s.cfg.NodeName, Epoch: s.epoch, Seq: seq, IDs: ids})
			if err == nil && s.cluster.Route(standby, peerReplica, b) != nil {
				s.repDirty.Store(true) // again next tick
			}
		}
	}
	if standby != "" {
		if b, err := json.Marshal(&repMsg{Op: "hello", Owner: s.cfg.NodeName, Epoch: s.epoch}); err == nil {
			_ = s.cluster.Route(standby, peerReplica, b) // repeated every tick
		}
	}
	return standby
}

// LeaveCluster tells the other nodes, before this node leaves the cluster
// on a graceful shutdown, to drop their copies of its sessions: Shutdown
// ends those sessions with system-shutdown and stores what they did not
// deliver offline itself, so a copy would only deliver it twice. It waits
// for the receipts or ctx.
func (s *Server) LeaveCluster(ctx context.Context) {
	if s.cluster == nil || s.leaving.Swap(true) {
		return
	}
	b, err := json.Marshal(&repMsg{Op: "bye", Owner: s.cfg.NodeName, Epoch: s.epoch})
	if err != nil {
		return
	}
	nodes := s.cluster.Nodes()
	acked := make(chan struct{}, len(nodes)) // a receipt never blocks
	n := 0
	for _, node := range nodes {
		if node != s.cfg.NodeName && s.cluster.RouteAcked(node, peerReplica, b, func(error) { acked <- struct{}{} }) == nil {
			n++
		}
	}
	for ; n > 0; n-- {
		select {
		case <-acked:
		case <-ctx.Done():
			return
		}
	}
}

// --- standby side -------------------------------------------------------

// applyReplica applies an owner's update to the copies held here.
func (s *Server) applyReplica(b []byte) {
	var m repMsg
	if err := json.Unmarshal(b, &m); err != nil {
		s.log.Warn().Err(err).Msg("bad session copy update")
		return
	}
	if m.Op == "resync" {
		s.resync(m.ID, m.Owner)
		return
	}
	if s.applyReplicaMsg(&m) {
		// An update for a copy this node does not have (it restarted, or
		// the copy was dropped): the owner sends a fresh snapshot.
		if b, err := json.Marshal(&repMsg{Op: "resync", ID: m.ID, Owner: s.cfg.NodeName}); err == nil {
			_ = s.cluster.Route(m.Owner, peerReplica, b) // lost: the next update asks again
		}
	}
}

// resync marks the copy of local session id on node stale: node does not
// have it.
func (s *Server) resync(id, node string) {
	sess := s.smDetached.get(id)
	if sess == nil {
		return
	}
	sess.mu.Lock()
	if sm := sess.sm; sm != nil && sm.rep == node && !sm.repDirty {
		sess.staleLocked()
	}
	sess.mu.Unlock()
}

// applyReplicaMsg applies m to the copies; it reports whether m was an
// update for a copy that is missing here.
func (s *Server) applyReplicaMsg(m *repMsg) (missing bool) {
	t := &s.replicas
	t.mu.Lock()
	defer t.mu.Unlock()
	t.epochs[m.Owner] = m.Epoch // the newest process of that node speaks
	if m.Op == "bye" {
		n := 0
		for id, r := range t.byID {
			if r.owner == m.Owner {
				delete(t.byID, id)
				n++
			}
		}
		s.log.Info().Str("node", m.Owner).Int("copies", n).Msg("node leaving gracefully: its session copies dropped")
		return false
	}
	if m.Op == "keep" {
		keep := make(map[string]bool, len(m.IDs))
		for _, id := range m.IDs {
			keep[id] = true
		}
		for id, r := range t.byID {
			if r.owner == m.Owner && r.seq <= m.Seq && !keep[id] {
				delete(t.byID, id)
			}
		}
		return false
	}
	if m.Op == "open" {
		bare := m.Full
		if i := strings.IndexByte(bare, '/'); i >= 0 {
			bare = bare[:i]
		}
		r := &replica{id: m.ID, owner: m.Owner, full: m.Full, bare: bare, epoch: m.Epoch, inH: m.InH, base: m.Base, fifo: m.Out, seq: m.Seq}
		if m.Pres != nil {
			r.pres = *m.Pres
		}
		t.byID[m.ID] = r
		return false
	}
	if m.Op == "hello" {
		return false
	}
	r := t.byID[m.ID]
	if r == nil || r.owner != m.Owner {
		return m.Op != "close"
	}
	switch m.Op {
	case "out":
		r.fifo = append(r.fifo, m.Out...)
	case "ack":
		if !before(m.H, r.base) {
			n := int(m.H - r.base)
			if n > len(r.fifo) {
				n = len(r.fifo)
			}
			r.fifo = append(r.fifo[:0:0], r.fifo[n:]...)
			r.base = m.H
		}
	case "in":
		if !before(m.H, r.inH) {
			r.inH = m.H
		}
	case "pres":
		if m.Pres != nil {
			r.pres = *m.Pres
		}
	case "close":
		delete(t.byID, m.ID)
	}
	return false
}

// ownerMayHold reports whether r's owner may still hold the session, so
// that the copy must not be handed over: it is the process that made r,
// and it is a member that the requester (when it says so) and this node
// do not both fail to reach. Two nodes that lost their links to it are
// taken as its death before the membership declares it (a partition
// that cuts the owner off from both is treated the same: at-least-once).
// Called with the table's mu held.
func (s *Server) ownerMayHold(r *replica, req takeoverReq, members map[string]bool) bool {
	if s.replicas.epochs[r.owner] != r.epoch || !members[r.owner] {
		return false // restarted, or dead for the membership
	}
	return !req.OwnerUnreachable || s.cluster.Reachable(r.owner)
}

// memberSet returns the alive members by name.
func (s *Server) memberSet() map[string]bool {
	m := map[string]bool{}
	for _, n := range s.cluster.Nodes() {
		m[n] = true
	}
	return m
}

// giveReplica hands the copy of req.ID over for resumption on req.From,
// unless its owner is alive (then the owner answers).
func (s *Server) giveReplica(req takeoverReq) (takeoverResp, bool) {
	resp := takeoverResp{Req: req.Req, From: s.cfg.NodeName, Replica: true}
	members := s.memberSet()
	t := &s.replicas
	t.mu.Lock()
	r := t.byID[req.ID]
	if r == nil || r.bare != req.Bare || s.ownerMayHold(r, req, members) {
		t.mu.Unlock()
		return resp, false
	}
	delete(t.byID, req.ID)
	t.mu.Unlock()
	if before(r.base+uint32(len(r.fifo)), req.H) {
		// The client acknowledges stanzas the copy never had: it cannot be
		// resumed consistently, but it can learn what was handled.
		s.smDetached.endedHere(req.ID, r.bare, r.inH)
		s.offload(func() { s.undeliverableAll(r.full, r.fifo) })
		resp.HSet, resp.H = true, r.inH
		return resp, true
	}
	resend := r.fifo
	if !before(req.H, r.base) {
		resend = r.fifo[req.H-r.base:]
	}
	resp.OK, resp.Full, resp.InH, resp.Resend = true, r.full, r.inH, resend
	resp.repPresence = r.pres
	s.log.Info().Str("jid", r.full).Str("node", req.From).Str("owner", r.owner).Msg("session copy handed over for resumption")
	return resp, true
}

// expireReplicas drops copies whose owner has been dead (out of the
// membership, not merely unlinked) or restarted for longer than the
// resumption timeout: their stanzas go to offline storage and the handled
// count is kept for <failed h/>.
func (s *Server) expireReplicas(now time.Time) {
	alive := s.memberSet()
	t := &s.replicas
	var expired []*replica
	t.mu.Lock()
	for id, r := range t.byID {
		if alive[r.owner] && t.epochs[r.owner] == r.epoch {
			r.orphaned = time.Time{}
			continue
		}
		if r.orphaned.IsZero() {
			r.orphaned = now
			s.log.Info().Str("jid", r.full).Str("owner", r.owner).Msg("session owner gone: holding its copy for resumption")
			continue
		}
		if now.Sub(r.orphaned) >= s.cfg.SMResumeTimeout {
			delete(t.byID, id)
			expired = append(expired, r)
		}
	}
	t.mu.Unlock()
	for _, r := range expired {
		s.smDetached.endedHere(r.id, r.bare, r.inH)
		s.undeliverableAll(r.full, r.fifo)
		s.log.Info().Str("jid", r.full).Int("stanzas", len(r.fifo)).Msg("session copy expired: its stanzas are in offline storage")
	}
}

// findReplica looks for a copy of session id here and on every other
// alive node. ok is false when nobody has one (resp may still carry h).
func (s *Server) findReplica(id, bare string, h uint32, ownerUnreachable bool) (takeoverResp, bool) {
	req := takeoverReq{ID: id, Bare: bare, H: h, From: s.cfg.NodeName, Req: randomID(8), Replica: true, OwnerUnreachable: ownerUnreachable}
	if resp, ok := s.giveReplica(req); ok {
		return resp, true
	}
	var nodes []string
	for _, n := range s.cluster.Nodes() {
		if n != s.cfg.NodeName {
			nodes = append(nodes, n)
		}
	}
	if len(nodes) == 0 {
		return takeoverResp{}, false
	}
	ch := s.moves.wait(req.Req, len(nodes))
	defer s.finishTakeover(req.Req) // a second copy that answered too goes offline
	b, err := json.Marshal(req)
	if err != nil {
		return takeoverResp{}, false
	}
	asked := 0
	for _, n := range nodes {
		if s.cluster.Route(n, peerTakeover, b) == nil {
			asked++
		}
	}
	t := time.NewTimer(takeoverTimeout)
	defer t.Stop()
	var best takeoverResp
	found := false
	for ; asked > 0; asked-- {
		select {
		case r := <-ch:
			if r.OK {
				return r, true
			}
			if r.HSet && !found {
				best, found = r, true
			}
		case <-t.C:
			return best, found
		case <-s.ctx.Done():
			return best, found
		}
	}
	return best, found
}
