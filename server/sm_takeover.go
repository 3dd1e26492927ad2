package server

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/wire"
)

// XEP-0198 resumption on another node. A stream management id names the
// node that issued it ("node1~3f9c…"). A client that resumes on another node
// makes that node ask the owner, over the node link, to hand the session
// over: the owner detaches it without announcing unavailable and returns its
// state (handled count, unacked and queued outbound stanzas, presence); the
// new node binds it, answers <resumed/> and resends. The directory entry
// moves with the newer version. When the owner is gone, <failed/> follows
// and the client binds anew and resends what was not acked.

// takeoverTimeout bounds the wait for the owner's answer; well above
// settleTimeout, the owner's own wait for pending commits.
const takeoverTimeout = 8 * time.Second

// takeovers holds the requests waiting for an owner's answer.
type takeovers struct {
	mu      sync.Mutex
	pending map[string]chan takeoverResp
}

func (s *Server) smID() string {
	if s.cfg.NodeName == "" {
		return randomID(12)
	}
	return s.cfg.NodeName + "~" + randomID(12)
}

// smOwner returns the node that issued id ("" if it does not say).
func smOwner(id string) string {
	i := strings.LastIndex(id, "~")
	if i <= 0 {
		return ""
	}
	return id[:i]
}

// takeover asks node for the session id of bare.
func (s *Server) takeover(node, id, bare string, h uint32) (takeoverResp, error) {
	req := takeoverReq{ID: id, Bare: bare, H: h, From: s.cfg.NodeName, Req: randomID(8)}
	ch := s.moves.wait(req.Req, 1)
	defer s.finishTakeover(req.Req)
	// With a receipt: a link that dies under the request (its node was
	// killed) fails it at once instead of after the timeout.
	linkDied := make(chan error, 1)
	if err := s.sendPeerAcked(node, peerTakeoverRequest, req, func(err error) {
		if err != nil {
			linkDied <- err
		}
	}); err != nil {
		return takeoverResp{}, err
	}
	t := time.NewTimer(takeoverTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r, nil
	case err := <-linkDied:
		return takeoverResp{}, err
	case <-t.C:
		return takeoverResp{}, errors.New("no answer from " + node)
	case <-s.ctx.Done():
		return takeoverResp{}, s.ctx.Err()
	}
}

// wait registers request id for up to n answers.
func (t *takeovers) wait(id string, n int) chan takeoverResp {
	ch := make(chan takeoverResp, n)
	t.mu.Lock()
	if t.pending == nil {
		t.pending = make(map[string]chan takeoverResp)
	}
	t.pending[id] = ch
	t.mu.Unlock()
	return ch
}

// done forgets request id and returns the answers nobody took.
func (t *takeovers) done(id string) []takeoverResp {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := t.pending[id]
	delete(t.pending, id)
	var left []takeoverResp
	for ch != nil {
		select {
		case r := <-ch:
			left = append(left, r)
		default:
			return left
		}
	}
	return left
}

// deliver hands resp to the request waiting for it; false if none does.
// Under the lock, so that done sees every answer delivered before it.
func (t *takeovers) deliver(resp takeoverResp) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := t.pending[resp.Req]
	if ch == nil {
		return false
	}
	select {
	case ch <- resp:
	default: // more answers than expected; never block the link
	}
	return true
}

// finishTakeover forgets request id; answers that came but were not used
// are abandoned.
func (s *Server) finishTakeover(id string) {
	for _, r := range s.moves.done(id) {
		s.abandoned(r)
	}
}

// abandoned handles a takeover answer nobody uses (the client got its
// answer from elsewhere, or <failed/>): the stanzas it carries go to
// offline storage; a live session given up by its owner is announced gone
// by the owner.
func (s *Server) abandoned(resp takeoverResp) {
	if !resp.OK {
		return
	}
	s.offload(func() {
		s.undeliverableAll(resp.Full, resp.Resend)
		if resp.Replica || resp.From == "" {
			return
		}
		if err := s.sendPeer(resp.From, peerDropMoved, dropMoved{Full: resp.Full}); err != nil {
			s.log.Warn().Err(err).Str("jid", resp.Full).Msg("drop a session nobody resumed")
		}
	})
}

// answerTakeover sends resp to the requesting node. An answer that surely
// did not leave (or, for a standby's copy, may not have arrived) keeps
// its stanzas offline and the handled count here.
func (s *Server) answerTakeover(node string, req takeoverReq, resp takeoverResp) {
	// surely: the answer never left; otherwise the link died under it and
	// it may have arrived (at-least-once: the stanzas may then arrive twice).
	lost := func(surely bool) {
		if !resp.OK {
			return
		}
		s.smDetached.endedHere(req.ID, req.Bare, resp.InH)
		s.offload(func() {
			s.undeliverableAll(resp.Full, resp.Resend)
			switch {
			case resp.Replica:
			case surely:
				s.announceGone(resp.Full) // the session we gave up went nowhere
			default:
				// Our directory entry goes; other nodes announce it gone
				// unless the requester's newer entry says it lives there.
				s.cluster.Unpublish(resp.Full)
			}
		})
	}
	if err := s.sendPeerAcked(node, peerTakeoverAnswer, resp, func(err error) {
		if err != nil {
			s.log.Warn().Err(err).Str("node", node).Msg("session takeover answer lost with the link")
			lost(false)
		}
	}); err != nil {
		s.log.Warn().Err(err).Str("node", node).Msg("answer session takeover")
		lost(true)
	}
}

// takeoverRequested answers a takeover request from another node (a
// control message, peer_protocol.go).
func (s *Server) takeoverRequested(req takeoverReq) {
	if s.cluster == nil {
		return
	}
	// giveAway may wait for pending commits: not on the link's reader
	// goroutine.
	s.spawn(func() {
		if req.Replica {
			// Asked by a node looking for a copy: a session that lives
			// here answers, then a copy held here, else the count of one
			// that ended here.
			var resp takeoverResp
			if s.smDetached.get(req.ID) != nil {
				resp = s.giveAway(req)
			} else if r, ok := s.giveReplica(req); ok {
				resp = r
			} else {
				resp = s.giveAway(req) // not found: h if it ended here
			}
			s.answerTakeover(req.From, req, resp)
			return
		}
		// A session that already moved on: the node that holds it now
		// answers the requester directly.
		if next := s.smDetached.movedTo(req.ID); next != "" && next != req.From && next != s.cfg.NodeName && s.smDetached.get(req.ID) == nil {
			if err := s.sendPeer(next, peerTakeoverRequest, req); err == nil {
				return
			}
		}
		s.answerTakeover(req.From, req, s.giveAway(req))
	})
}

// takeoverAnswered hands an answer to the request waiting for it (a
// control message, peer_protocol.go).
func (s *Server) takeoverAnswered(resp takeoverResp) {
	if !s.moves.deliver(resp) {
		s.abandoned(resp) // nobody waits any more (the client got <failed/>)
	}
}

// announceGone removes a session this node handed over but nobody took
// from the directory, and tells its contacts it is unavailable.
func (s *Server) announceGone(full string) {
	if j, err := jid.Parse(full); err == nil && s.sessions.get(j.Bare().String(), j.Resourcepart()) == nil && s.cluster != nil {
		s.cluster.Unpublish(full)
		s.spawn(func() {
			raw := wire.AppendAttr([]byte("<presence"), "from", full)
			s.broadcast(j, append(raw, " type='unavailable'/>"...), noop)
		})
	}
}

// giveAway detaches a local session for another node and returns its state.
func (s *Server) giveAway(req takeoverReq) takeoverResp {
	resp := takeoverResp{Req: req.Req, From: s.cfg.NodeName}
	sess := s.smDetached.get(req.ID)
	if sess == nil || sess.bare != req.Bare {
		s.smDetached.mu.Lock()
		if e, ok := s.smDetached.ended[req.ID]; ok && e.bare == req.Bare {
			resp.HSet, resp.H = true, e.h
		}
		s.smDetached.mu.Unlock()
		return resp
	}
	sess.mu.Lock()
	if sess.ended || sess.sm == nil || before(sess.sm.outSent, req.H) {
		sess.mu.Unlock()
		return resp
	}
	sess.mu.Unlock()
	sess.settleInbound()
	sm := sess.sm
	if sess.ended {
		sess.mu.Unlock()
		return resp
	}
	sm.ack(req.H)
	for _, it := range sm.unacked {
		resp.Resend = append(resp.Resend, it.b)
	}
	for _, it := range sess.out {
		if it.stanza {
			resp.Resend = append(resp.Resend, it.b)
		}
	}
	sess.dropCopyLocked()            // the new owner makes its own copy
	release := sess.takeHeldLocked() // their stanzas go along
	defer release()
	resp.OK, resp.Full, resp.InH = true, sess.full, sm.inH
	resp.standbyPresence = *sess.presLocked()
	sess.ended = true
	sess.out, sm.unacked = nil, nil
	c := sess.unplugLocked()
	sess.mu.Unlock()
	if c != nil {
		c.conn.Close()
	}
	s.smDetached.mu.Lock()
	delete(s.smDetached.byID, req.ID)
	s.smDetached.mu.Unlock()
	// Leave the directory entry: the new node's newer entry replaces it, and
	// contacts see no unavailable presence for a session that moved.
	if s.sessions.remove(sess) {
		s.stats.Sessions.Store(int64(s.sessions.count()))
	}
	s.smDetached.moved(req.ID, sess.full, req.From)
	sess.log.Info().Str("node", req.From).Msg("session handed over for resumption on another node")
	return resp
}

// resumeMoved binds a session taken over from another node on c and serves
// it until the connection ends.
func (s *Server) resumeMoved(c *c2sConn, id string, st takeoverResp, h uint32) (bool, error) {
	full, err := jid.Parse(st.Full)
	if err != nil {
		return false, c.write(s.smDetached.failed(id, ""))
	}
	sess := newSession(c, full)
	sess.c = nil
	sess.sm = &smState{id: id, resumable: true, counting: true, inRecv: st.InH, inH: st.InH, outSent: h}
	sess.available, sess.priority, sess.show, sess.status = st.Available, st.Priority, st.Show, st.Status
	sess.presence, sess.rosterRequested = st.Presence, st.Roster
	for _, b := range st.Resend {
		sess.out = append(sess.out, outItem{b: b, stanza: true})
	}
	s.smDetached.add(id, sess) // before its first snapshot (replicaPass lists smDetached)
	standby := s.currentStandby()
	sess.mu.Lock()
	release := sess.startReplicaLocked(standby)
	sess.mu.Unlock()
	release()
	s.bind(sess)
	b := []byte("<resumed xmlns='urn:xmpp:sm:3'")
	b = wire.AppendAttr(b, "previd", id)
	b = append(b, " h='"+strconv.FormatUint(uint64(st.InH), 10)+"'/>"...)
	if err := c.write(b); err != nil {
		c.conn.Close()
		s.endSession(sess)
		return true, err
	}
	sess.log.Info().Int("resent", len(st.Resend)).Bool("from_copy", st.Replica).Msg("session resumed from another node")
	sess.attach(c)
	if st.Available {
		s.spawn(func() {
			if st.Replica {
				// Its node died: contacts saw it go unavailable.
				s.broadcast(sess.jid, st.Presence, noop)
			}
			if st.Priority >= 0 {
				// Messages that found no session while it moved (its old
				// node dead, or a directory that saw the old entry go
				// before the new one came) went to offline storage.
				ctx, cancel := s.storeCtx()
				s.deliverOffline(ctx, sess)
				cancel()
			}
		})
	}
	rerr := sess.readLoop(c)
	sess.connLost(c, rerr)
	return true, nil
}
