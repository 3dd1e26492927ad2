package server

// XEP-0198 resumption on the node that holds the session: detaching a
// session whose connection broke, and <resume/> (§5).

import (
	"strconv"
	"time"

	"xcollect.dev/xcollect/internal/wire"
)

// settleTimeout bounds how long a resumption waits for stanzas that were
// received but are not yet handled (durable).
const settleTimeout = 3 * time.Second

// settleInbound waits until every stanza received on the old stream is
// handled, so that the h of <resumed/> is exact; the client then resends
// only what the server never got. If the store cannot make them durable in
// time, the unhandled ones are forgotten: the counters restart at the
// handled count (their late completions no longer count), the client
// resends them, and those that did commit reach their recipient twice
// unless they carry an XEP-0359 origin-id (queue dedupe).
// Called without s.mu; returns with it held.
func (s *Session) settleInbound() {
	deadline := time.Now().Add(settleTimeout)
	for {
		s.mu.Lock()
		sm := s.sm
		if len(sm.pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			fresh := *sm
			fresh.inRecv, fresh.pending, fresh.ackWant = sm.inH, nil, false
			fresh.inFlight, fresh.inWait = false, false // the old one's copy answers nobody now
			s.sm = &fresh                               // completions of the old stanzas see another sm and do nothing
			return
		}
		s.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
}

// unplugLocked takes the connection away from the session: its writer
// stops and a pending resumption timeout is cancelled. It returns the old
// connection (nil when detached). Called with s.mu held.
func (s *Session) unplugLocked() *c2sConn {
	c := s.c
	s.c = nil
	if s.stop != nil {
		close(s.stop)
		s.stop, s.wake = nil, nil
	}
	if s.sm != nil && s.sm.timer != nil {
		s.sm.timer.Stop()
	}
	return c
}

// detach parks a session whose connection broke, for resumption.
func (s *Session) detach(c *c2sConn) {
	s.mu.Lock()
	if s.c != c {
		s.mu.Unlock()
		return
	}
	s.unplugLocked()
	sm := s.sm
	sm.rPending = false
	s.copyHandledLocked(sm.inH, nil)
	sm.timer = time.AfterFunc(s.srv.cfg.SMResumeTimeout, func() {
		// Run as a server goroutine: refused (and moot) once Shutdown
		// began, which ends detached sessions itself.
		s.srv.spawn(func() {
			s.mu.Lock()
			still := s.c == nil && !s.ended
			s.mu.Unlock()
			if still {
				s.log.Info().Msg("resumption timed out")
				s.srv.endSession(s)
			}
		})
	})
	s.mu.Unlock()
	c.conn.Close()
	s.log.Info().Msg("session detached, waiting for resumption")
}

// resume handles <resume/> (XEP-0198 §5) on a freshly authenticated
// stream. done is true when the stream was resumed (and has ended by the
// time resume returns) or closed.
func (s *Server) resume(c *c2sConn, el *wire.Element) (done bool, err error) {
	previd := el.Get("previd")
	h, perr := strconv.ParseUint(el.Get("h"), 10, 32)
	bare := c.user + "@" + c.domain
	sess := s.smDetached.get(previd)
	if perr == nil && sess == nil && s.cluster != nil {
		failedH := func(h uint32) error {
			return c.write([]byte("<failed xmlns='urn:xmpp:sm:3' h='" + strconv.FormatUint(uint64(h), 10) + "'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"))
		}
		unreachable := false
		if owner := smOwner(previd); owner != "" && owner != s.cfg.NodeName {
			st, err := s.takeover(owner, previd, bare, uint32(h))
			switch {
			case err != nil:
				unreachable = true
				c.log.Info().Err(err).Str("node", owner).Msg("resume: session owner unreachable")
			case st.OK:
				return s.resumeMoved(c, previd, st, uint32(h))
			case st.HSet:
				return false, failedH(st.H)
			}
		}
		// The owner is dead, restarted or does not know the id: its
		// standby may hold a copy (sm_standby_copy.go).
		if s.smDetached.movedTo(previd) == "" && !s.smDetached.endedFor(previd, bare) {
			if st, ok := s.findReplica(previd, bare, uint32(h), unreachable); ok {
				if st.OK {
					return s.resumeMoved(c, previd, st, uint32(h))
				}
				return false, failedH(st.H)
			}
		}
	}
	if perr != nil || sess == nil || sess.bare != bare {
		return false, c.write(s.smDetached.failed(previd, bare))
	}
	sess.mu.Lock()
	if sess.ended || sess.sm == nil || before(sess.sm.outSent, uint32(h)) {
		sess.mu.Unlock()
		return false, c.write(s.smDetached.failed(previd, bare))
	}
	sess.mu.Unlock()
	sess.settleInbound()
	sm := sess.sm
	if sess.ended {
		sess.mu.Unlock()
		return false, c.write(s.smDetached.failed(previd, bare))
	}
	old := sess.unplugLocked()
	sm.ack(uint32(h))
	sess.copyClientAckLocked(uint32(h))
	resend := len(sm.unacked)
	sess.requeueForResumeLocked()
	sm.outSent = uint32(h)
	sm.rPending = false
	inH := sm.inH
	sess.mu.Unlock()
	if old != nil {
		old.conn.Close() // a half-open connection the client gave up on
	}
	b := []byte("<resumed xmlns='urn:xmpp:sm:3'")
	b = wire.AppendAttr(b, "previd", previd)
	b = append(b, " h='"+strconv.FormatUint(uint64(inH), 10)+"'/>"...)
	if err := c.write(b); err != nil {
		// park it again (detach re-arms the resumption timeout)
		sess.mu.Lock()
		sess.c = c
		sess.mu.Unlock()
		sess.detach(c)
		return true, err
	}
	sess.log.Info().Int("resent", resend).Msg("session resumed")
	sess.attach(c)
	rerr := sess.readLoop(c)
	sess.connLost(c, rerr)
	return true, nil
}

// requeueForResumeLocked puts the unacknowledged stanzas back in front of
// the queue for the resumed stream. An <a/> queued for the old connection
// is dropped: the client would take it for the answer to an <r/> it sends
// after <resumed/> and count from a stale h (XEP-0198 §5: <resumed h/> is
// the count). Called with s.mu held.
func (s *Session) requeueForResumeLocked() {
	sm := s.sm
	out := make([]outItem, 0, len(sm.unacked)+len(s.out))
	for _, it := range sm.unacked {
		out = append(out, outItem{b: it.b, stanza: true})
	}
	for _, it := range s.out {
		if !it.ack {
			out = append(out, it)
		}
	}
	s.out = out
	sm.unacked = nil
}

// detachedTable indexes resumable sessions by their stream management id,
