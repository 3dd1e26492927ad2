package server

import (
	"strings"
	"sync"
	"time"
)

// replica is a standby's copy of another node's session.
type replica struct {
	id, owner, full, bare string
	epoch                 int64
	inH, base             uint32
	fifo                  [][]byte // outbound stanzas base+1, base+2, …
	pres                  standbyPresence
	seq                   uint64    // of the snapshot it started from
	orphaned              time.Time // when the owner was first seen dead or restarted
}

// replicaTable holds the copies this node keeps for others.
type replicaTable struct {
	mu     sync.Mutex
	byID   map[string]*replica
	epochs map[string]int64 // owner → newest start time seen
}

// standbyUpdated applies an owner's update to the copies held here (a
// control message, peer_protocol.go); on the owner, resync marks a copy
// stale.
func (s *Server) standbyUpdated(m *standbyMsg) {
	if m.Op == "resync" {
		s.resync(m.ID, m.Owner)
		return
	}
	if s.applyReplicaMsg(m) {
		// An update for a copy this node does not have (it restarted, or
		// the copy was dropped): the owner sends a fresh snapshot.
		_ = s.sendPeer(m.Owner, peerStandbyUpdate, &standbyMsg{Op: "resync", ID: m.ID, Owner: s.cfg.NodeName}) // lost: the next update asks again
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
	if sm := sess.sm; sm != nil && sm.standby.node == node && !sm.standby.dirty {
		sess.staleLocked()
	}
	sess.mu.Unlock()
}

// applyReplicaMsg applies m to the copies; it reports whether m was an
// update for a copy that is missing here.
func (s *Server) applyReplicaMsg(m *standbyMsg) (missing bool) {
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
	resp.standbyPresence = r.pres
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
	asked := 0
	for _, n := range nodes {
		if s.sendPeer(n, peerTakeoverRequest, req) == nil {
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
