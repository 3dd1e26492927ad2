package server

import (
	"context"
	"sync/atomic"
	"time"
)

// Replication of XEP-0198 state, so that a client whose node died resumes
// on another one. Each node copies the stream management state of its
// resumable sessions to one standby node (the next reachable node after it
// in name order) over the node links, as standby-update control messages
// (standbyMsg, peer_protocol.go):
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

// replicaTick is how often a node checks its standby and its copies.
const replicaTick = time.Second

// standbyOwner is this node's side of the copies: which node holds them
// and what every session's copy still needs.
type standbyOwner struct {
	dirty     atomic.Bool   // a session's copy needs a fresh snapshot
	snapshots atomic.Uint64 // numbers the snapshots sent to standbys
	kick      chan struct{} // wakes replicaLoop: a copy went stale
	current   atomic.Value  // string: the standby of replicaLoop's last pass
	leaving   atomic.Bool   // LeaveCluster ran: no more copies
	epoch     int64         // start time: tells a restarted node from the old one
}

// standbyCopyState is one session's copy on its standby, kept with the
// session's XEP-0198 state (guarded by the session's mu).
type standbyCopyState struct {
	node      string   // node holding it ("" = none)
	dirty     bool     // an update was lost: a fresh snapshot is due
	held      []func() // senders and acks waiting for that snapshot
	gen       uint64   // snapshots sent (to this standby or earlier ones)
	confirmed uint64   // the generation whose snapshot the standby confirmed
}

// currentStandby is the standby replicaLoop chose at its last pass: a
// session enabling XEP-0198 takes it without walking the membership (a
// login-rate path). Before the first pass it is computed.
func (s *Server) currentStandby() string {
	if v, ok := s.standbys.current.Load().(string); ok && v != "" {
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
func (s *Session) repLocked(m *standbyMsg, done func()) bool {
	sm := s.sm
	if sm == nil || sm.standby.node == "" || s.srv.standbys.leaving.Load() {
		return false
	}
	if sm.standby.dirty {
		if done == nil {
			return false // the snapshot carries it
		}
		sm.standby.held = append(sm.standby.held, done)
		return true
	}
	id, gen := sm.id, sm.standby.gen
	m.ID, m.Owner, m.Epoch = id, s.srv.cfg.NodeName, s.srv.standbys.epoch
	err := s.srv.sendPeerAcked(sm.standby.node, peerStandbyUpdate, m, func(err error) {
		s.mu.Lock()
		cur := s.curSMLocked(id)
		switch {
		case cur == nil:
			// ended or handed over: its stanzas went offline or along
		case err != nil:
			if cur.standby.gen == gen {
				s.staleLocked()
			}
			cur.standby.held, done = appendDone(cur.standby.held, done), nil
		case cur.standby.gen != gen || cur.standby.confirmed != gen || cur.standby.dirty:
			// applied, but to a copy that is not (yet) the confirmed one
			cur.standby.held, done = appendDone(cur.standby.held, done), nil
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
		sm.standby.held = append(sm.standby.held, done)
	}
	return true
}

// The updates of a session's copy, one per event of the session. Each is
// called with s.mu held; see repLocked for done and the result.

// copyQueuedLocked copies a stanza queued for the client.
func (s *Session) copyQueuedLocked(b []byte, done func()) bool {
	return s.repLocked(&standbyMsg{Op: "out", Out: [][]byte{b}}, done)
}

// copyClientAckLocked copies the client's <a h/>.
func (s *Session) copyClientAckLocked(h uint32) { s.repLocked(&standbyMsg{Op: "ack", H: h}, nil) }

// copyHandledLocked copies the handled count of the client's stanzas.
func (s *Session) copyHandledLocked(h uint32, done func()) bool {
	return s.repLocked(&standbyMsg{Op: "in", H: h}, done)
}

// copyPresenceLocked copies the session's presence.
func (s *Session) copyPresenceLocked() {
	s.repLocked(&standbyMsg{Op: "pres", Pres: s.presLocked()}, nil)
}

// dropCopyLocked tells the standby the session ended or moved.
func (s *Session) dropCopyLocked() { s.repLocked(&standbyMsg{Op: "close"}, nil) }

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
	if s.sm == nil || len(s.sm.standby.held) == 0 {
		return noop
	}
	held := s.sm.standby.held
	s.sm.standby.held = nil
	return func() {
		for _, done := range held {
			done()
		}
	}
}

// staleLocked marks the copy as missing an update and wakes replicaLoop.
func (s *Session) staleLocked() {
	s.sm.standby.dirty = true
	s.srv.standbys.dirty.Store(true)
	select {
	case s.srv.standbys.kick <- struct{}{}:
	default:
	}
}

// presLocked returns the session's presence for a copy.
func (s *Session) presLocked() *standbyPresence {
	return &standbyPresence{Available: s.available, Priority: s.priority, Show: s.show, Status: s.status,
		Presence: s.presence, Roster: s.rosterRequested}
}

// snapshotLocked describes the session in full for a new standby.
func (s *Session) snapshotLocked() *standbyMsg {
	sm := s.sm
	m := &standbyMsg{Op: "open", Full: s.full, InH: sm.inH, Pres: s.presLocked(), Seq: s.srv.standbys.snapshots.Add(1)}
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
	old := sm.standby.node
	held := sm.standby.held
	sm.standby.gen++
	gen, id := sm.standby.gen, sm.id
	sm.standby.node, sm.standby.dirty, sm.standby.held = standby, false, nil
	if old != "" && old != standby {
		// best effort: a copy of an alive owner is also dropped by keep
		_ = s.srv.sendPeer(old, peerStandbyUpdate, &standbyMsg{Op: "close", ID: sm.id, Owner: s.srv.cfg.NodeName, Epoch: s.srv.standbys.epoch})
	}
	runHeld := func() {
		for _, done := range held {
			done()
		}
	}
	if standby == "" || s.srv.standbys.leaving.Load() {
		sm.standby.confirmed = gen // no copy is kept: nothing to wait for
		return runHeld
	}
	m := s.snapshotLocked()
	m.ID, m.Owner, m.Epoch = id, s.srv.cfg.NodeName, s.srv.standbys.epoch
	err := s.srv.sendPeerAcked(standby, peerStandbyUpdate, m, func(err error) {
		s.mu.Lock()
		cur := s.curSMLocked(id)
		release := noop
		switch {
		case cur == nil:
			// ended or handed over: nothing to wait for
		case err != nil:
			if cur.standby.gen == gen {
				s.staleLocked()
			}
			cur.standby.held, held = append(cur.standby.held, held...), nil
		case cur.standby.gen != gen:
			// applied to a standby that was replaced since: wait for
			// the newer snapshot
			cur.standby.held, held = append(cur.standby.held, held...), nil
		case !cur.standby.dirty:
			// the copy holds everything queued up to now
			cur.standby.confirmed = gen
			release = s.takeHeldLocked()
		}
		s.mu.Unlock()
		runHeld()
		release()
	})
	if err != nil {
		s.staleLocked()
		sm.standby.held = append(sm.standby.held, held...)
	}
	return noop
}

// replicaLoop keeps each local session's copy on the current standby and
// expires copies whose owner died.
func (s *Server) replicaLoop() {
	t := time.NewTicker(replicaTick)
	defer t.Stop()
	last := ""
	var lastExpiry time.Time
	for {
		if !s.standbys.leaving.Load() {
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
		case <-s.standbys.kick:
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
	s.standbys.current.Store(standby)
	if standby != last || s.standbys.dirty.Swap(false) {
		seq := s.standbys.snapshots.Load()
		var ids []string
		// Every resumable session, attached or detached, is in smDetached
		// before its first snapshot is sent.
		for _, sess := range s.smDetached.list() {
			sess.mu.Lock()
			release := noop
			if sm := sess.sm; sm != nil && sm.resumable && !sess.ended {
				if sm.standby.node != standby || sm.standby.dirty {
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
			keep := &standbyMsg{Op: "keep", Owner: s.cfg.NodeName, Epoch: s.standbys.epoch, Seq: seq, IDs: ids}
			if s.sendPeer(standby, peerStandbyUpdate, keep) != nil {
				s.standbys.dirty.Store(true) // again next tick
			}
		}
	}
	if standby != "" {
		_ = s.sendPeer(standby, peerStandbyUpdate, &standbyMsg{Op: "hello", Owner: s.cfg.NodeName, Epoch: s.standbys.epoch}) // repeated every tick
	}
	return standby
}

// LeaveCluster tells the other nodes, before this node leaves the cluster
// on a graceful shutdown, to drop their copies of its sessions: Shutdown
// ends those sessions with system-shutdown and stores what they did not
// deliver offline itself, so a copy would only deliver it twice. It waits
// for the receipts or ctx.
func (s *Server) LeaveCluster(ctx context.Context) {
	if s.cluster == nil || s.standbys.leaving.Swap(true) {
		return
	}
	bye := &standbyMsg{Op: "bye", Owner: s.cfg.NodeName, Epoch: s.standbys.epoch}
	nodes := s.cluster.Nodes()
	acked := make(chan struct{}, len(nodes)) // a receipt never blocks
	n := 0
	for _, node := range nodes {
		if node != s.cfg.NodeName && s.sendPeerAcked(node, peerStandbyUpdate, bye, func(error) { acked <- struct{}{} }) == nil {
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
