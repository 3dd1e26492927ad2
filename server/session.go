package server

import (
	"bufio"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/wire"
)

// closeReason says why a session ended; logged and counted.
type closeReason int

const (
	closeNone closeReason = iota
	closeClientEnd
	closeReadError
	closeWriteError
	closePolicyViolation
	closeNotWellFormed
	closeConflict
	closeTimeout
	closeShutdown
	closeSlowConsumer
	closeResumed
	closeResumeTimeout
	closeSeeOtherHost
)

func (r closeReason) String() string {
	return [...]string{"none", "client-end", "read-error", "write-error", "policy-violation",
		"not-well-formed", "conflict", "connection-timeout", "shutdown", "slow-consumer",
		"resumed-elsewhere", "resume-timeout", "see-other-host"}[r]
}

// outItem is one entry of a session's outbound queue.
type outItem struct {
	b       []byte
	stanza  bool // counted by XEP-0198; nonzas (acks, stream errors) are not
	final   bool // close the connection after writing it
	enabled bool // the <enabled/> answer: XEP-0198 counting starts after it
	counted bool // taken by the writer and kept in sm.unacked (countOutLocked)
	ack     bool // an <a h/>: meaningless on a resumed stream (<resumed h/> replaces it)
}

// Session is one bound client resource. Its connection has one reader (the
// goroutine that negotiated it, running run) and one writer goroutine; all
// other goroutines hand it stanzas with send, which never blocks.
type Session struct {
	srv  *Server
	jid  jid.JID
	full string
	bare string
	log  zerolog.Logger

	mu     sync.Mutex // guards everything below
	c      *c2sConn   // current connection; nil while detached
	out    []outItem
	wake   chan struct{} // wakes the current connection's writer
	stop   chan struct{} // closed when the current writer must quit
	ended  bool
	reason closeReason
	// presence state (RFC 6121 §4)
	available       bool
	priority        int
	show, status    string
	presence        []byte // last available presence, stamped from this resource
	rosterRequested bool
	sm              *smState    // nil unless XEP-0198 is enabled
	closing         atomic.Bool // set by closeWithError: the reader stops routing
}

func newSession(c *c2sConn, full jid.JID) *Session {
	s := &Session{
		srv:  c.srv,
		jid:  full,
		full: full.String(),
		bare: full.Bare().String(),
		c:    c,
	}
	s.log = c.log.With().Str("jid", s.full).Logger()
	return s
}

// notify wakes the writer. Called with s.mu held.
func (s *Session) notify() {
	if s.wake == nil {
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// JID returns the session's full JID.
func (s *Session) JID() jid.JID { return s.jid }

// send queues a stanza (stanza=true) or nonza for the client. It never
// blocks; a client that lets MaxOutQueue items pile up is disconnected.
func (s *Session) send(b []byte, stanza bool) { s.enqueue(b, stanza, nil) }

// sendThen is send for a stanza whose sender waits until it is safe: done
// runs once the stanza is queued here and, for a replicated session, copied
// to the standby.
func (s *Session) sendThen(b []byte, done func()) {
	s.enqueue(b, true, done)
}

// enqueue is send with an optional done (see sendThen), which runs once
// whatever happens to the stanza.
func (s *Session) enqueue(b []byte, stanza bool, done func()) {
	after := done // nil: nobody waits for the standby's copy
	if done == nil {
		done = noop
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		if stanza {
			s.srv.undeliverable(s.full, b)
		}
		done()
		return
	}
	if len(s.out) >= s.srv.cfg.MaxOutQueue {
		attached := s.c != nil
		s.mu.Unlock()
		if attached {
			s.closeWithError(closeSlowConsumer, wire.PolicyViolation, "too many stanzas waiting: the client does not read")
		}
		// Detached (waiting for resumption) or too slow: messages go to
		// offline storage instead of growing the queue without bound.
		if stanza {
			s.srv.undeliverable(s.full, b)
		}
		done()
		return
	}
	s.out = append(s.out, outItem{b: b, stanza: stanza})
	s.notify()
	copied := stanza && s.copyQueuedLocked(b, after)
	s.mu.Unlock()
	s.srv.stats.StanzasOut.Add(1)
	if !copied {
		done()
	}
}

// closeWithError ends the connection with a stream error. The session ends
// too (no resumption after a stream error).
func (s *Session) closeWithError(reason closeReason, cond, text string) {
	s.mu.Lock()
	if s.ended || s.reason != closeNone {
		s.mu.Unlock()
		return
	}
	s.reason = reason
	s.closing.Store(true)
	if s.sm != nil {
		s.sm.resumable = false
	}
	c := s.c
	s.out = append(s.out, outItem{b: wire.StreamError(cond, "", text), final: true})
	s.notify()
	s.mu.Unlock()
	s.srv.stats.StreamErrors.Add(1)
	s.srv.stats.conditions.add(cond)
	s.log.Debug().Stringer("reason", reason).Str("condition", cond).Msg("closing session")
	if c != nil {
		// The reader stops routing at once and its connection gets a fixed
		// deadline (never extended by the idle ping), so the writer still
		// flushes the error first.
		c.ir.closeBy(time.Now().Add(2 * time.Second))
	} else {
		s.srv.endSession(s)
	}
}

// run is the session's read loop; it returns when the connection ends.
func (s *Session) run() {
	c := s.c
	s.attach(c)
	err := s.readLoop(c)
	s.connLost(c, err)
}

// attach makes c the session's connection and starts its writer.
func (s *Session) attach(c *c2sConn) {
	c.ir.idle = s.srv.cfg.IdleTimeout
	c.ir.pingTimeout = s.srv.cfg.PingTimeout
	c.ir.onIdle = s.ping
	s.mu.Lock()
	s.c = c
	if s.reason == closeWriteError || s.reason == closeTimeout || s.reason == closeReadError {
		s.reason = closeNone // the previous connection's end; this one is fresh
	}
	wake, stop := make(chan struct{}, 1), make(chan struct{})
	s.wake, s.stop = wake, stop
	s.notify()
	s.mu.Unlock()
	if !s.srv.spawn(func() { s.writeLoop(c, wake, stop) }) {
		c.conn.Close()
	}
}

func (s *Session) ping() {
	s.send([]byte("<iq type='get' id='ping-"+randomID(4)+"' from='"+s.jid.Domain().String()+"'><ping xmlns='urn:xmpp:ping'/></iq>"), true)
}

// readLoop hands each element to the router until the stream ends.
func (s *Session) readLoop(c *c2sConn) error {
	for {
		el, err := c.dec.Next()
		if err != nil {
			return err
		}
		if s.closing.Load() {
			return errClosed // closed with a stream error: nothing more is routed
		}
		switch el.Name.Space {
		case wire.NSClient:
			s.srv.stats.StanzasIn.Add(1)
			switch el.Name.Local {
			case "message", "presence", "iq":
				s.srv.handleFromClient(s, el, s.countInbound())
			default:
				s.closeWithError(closeNotWellFormed, wire.UnsupportedStanzaType, "")
				return errClosed
			}
		case wire.NSSM:
			if !s.handleSM(el) {
				return errClosed
			}
		default:
			s.closeWithError(closeNotWellFormed, wire.UnsupportedStanzaType, "")
			return errClosed
		}
	}
}

// connLost runs when c's read loop ended.
func (s *Session) connLost(c *c2sConn, err error) {
	s.mu.Lock()
	if s.c != c { // already replaced by a resumed connection
		s.mu.Unlock()
		return
	}
	reason := s.reason
	canResume := s.sm != nil && s.sm.resumable && s.srv.cfg.SMResumeTimeout > 0
	s.mu.Unlock()
	switch {
	case reason == closeWriteError && canResume:
		// the connection died under the writer: resumable like a read error
	case reason != closeNone:
	case errors.Is(err, wire.ErrStreamEnd):
		reason = closeClientEnd
	case errors.Is(err, wire.ErrTooLarge):
		s.closeWithError(closePolicyViolation, wire.PolicyViolation, "stanza too large")
		reason = closePolicyViolation
	case errors.Is(err, wire.ErrNotWellFormed), errors.Is(err, wire.ErrRestricted):
		s.closeWithError(closeNotWellFormed, wire.NotWellFormed, "")
		reason = closeNotWellFormed
	case errors.Is(err, wire.ErrInvalidXML):
		s.closeWithError(closeNotWellFormed, wire.InvalidXML, err.Error())
		reason = closeNotWellFormed
	case isTimeout(err) && canResume:
		reason = closeTimeout // a dead connection: park the session for resumption
	case isTimeout(err):
		s.closeWithError(closeTimeout, wire.ConnectionTimeout, "no answer to ping")
		reason = closeTimeout
	default:
		reason = closeReadError
	}
	s.log.Debug().Stringer("reason", reason).Err(err).Msg("connection ended")
	s.mu.Lock()
	resumable := s.sm != nil && s.sm.resumable && s.srv.cfg.SMResumeTimeout > 0 &&
		(reason == closeReadError || reason == closeWriteError || reason == closeTimeout)
	if reason == closeClientEnd {
		s.out = append(s.out, outItem{b: []byte("</stream:stream>"), final: true})
		s.notify()
	}
	s.mu.Unlock()
	if resumable {
		s.detach(c)
		return
	}
	s.srv.endSession(s)
}

// writeLoop drains the outbound queue onto c until c fails or a final item
// was written.
func (s *Session) writeLoop(c *c2sConn, wake, stop chan struct{}) {
	// The buffer is borrowed per burst: an idle session holds none.
	var bw *bufio.Writer
	release := func() {
		if bw != nil {
			bw.Reset(nil)
			s.srv.writers.Put(bw)
			bw = nil
		}
	}
	defer release()
	for {
		s.mu.Lock()
		if s.c != c {
			s.mu.Unlock()
			return
		}
		items := s.out
		s.out = nil
		ended := s.ended
		over := s.countOutLocked(items)
		s.mu.Unlock()
		if over {
			s.closeWithError(closeSlowConsumer, wire.PolicyViolation, "too many stanzas not acknowledged (XEP-0198)")
		}
		if len(items) == 0 {
			if ended {
				return
			}
			release()
			select {
			case <-wake:
			case <-stop:
				return
			}
			continue
		}
		if err := c.conn.SetWriteDeadline(time.Now().Add(s.srv.cfg.WriteTimeout)); err != nil {
			s.writeFailed(c, items, err)
			return
		}
		if bw == nil {
			bw = s.srv.writers.Get().(*bufio.Writer)
			bw.Reset(c.conn)
		}
		final := false
		for i, it := range items {
			if _, err := bw.Write(it.b); err != nil {
				s.writeFailed(c, items[i+1:], err)
				return
			}
			if it.final {
				final = true
				if rest := uncounted(items[i+1:]); len(rest) > 0 {
					// Not written: endSession hands their stanzas to offline
					// storage, or we do if it already ran.
					s.mu.Lock()
					ended := s.ended
					if !ended {
						s.out = append(append([]outItem(nil), rest...), s.out...)
					}
					s.mu.Unlock()
					if ended {
						for _, it := range rest {
							if it.stanza {
								s.srv.undeliverable(s.full, it.b)
							}
						}
					}
				}
				break
			}
		}
		if s.smWantsAck() {
			_, _ = bw.WriteString("<r xmlns='urn:xmpp:sm:3'/>") // an error shows at Flush
		}
		if err := bw.Flush(); err != nil {
			s.writeFailed(c, nil, err)
			return
		}
		if final {
			// Half-close so the client reads the stream error; the reader
			// (or endSession's timer) closes the connection.
			if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite() // best effort: Close follows
			}
			return
		}
	}
}

// writeFailed keeps unwritten stanzas for resumption or hands them back to
// the router, and stops reading from c.
func (s *Session) writeFailed(c *c2sConn, rest []outItem, err error) {
	s.log.Debug().Err(err).Msg("write failed")
	s.mu.Lock()
	if s.c != c { // a stale writer of a connection already replaced
		s.mu.Unlock()
		c.conn.Close()
		return
	}
	if s.reason == closeNone {
		s.reason = closeWriteError
	}
	// Counted stanzas stay in sm.unacked: resent on resumption, or
	// stored offline when the session ends.
	rest = uncounted(rest)
	if s.sm != nil && s.sm.resumable {
		s.out = append(rest, s.out...)
		rest = nil
	}
	s.mu.Unlock()
	for _, it := range rest {
		if it.stanza {
			s.srv.undeliverable(s.full, it.b)
		}
	}
	c.conn.Close()
}

// uncounted returns the items not kept in sm.unacked.
func uncounted(items []outItem) []outItem {
	var out []outItem
	for _, it := range items {
		if !it.counted {
			out = append(out, it)
		}
	}
	return out
}

// endSession removes s for good: it leaves the session table, its
// unavailable presence is broadcast, and stanzas it did not deliver go to
// offline storage.
func (s *Server) endSession(s2 *Session) {
	s2.mu.Lock()
	if s2.ended {
		s2.mu.Unlock()
		return
	}
	s2.ended = true
	wasAvailable := s2.available
	s2.available = false
	var pending [][]byte
	if s2.sm != nil {
		pending = s2.sm.unackedStanzas()
		s2.sm.unacked = nil
		s2.dropCopyLocked() // we store them offline ourselves
	}
	release := s2.takeHeldLocked() // after the offline storage below
	var keep []outItem
	for _, it := range s2.out {
		if it.stanza {
			pending = append(pending, it.b)
		} else {
			keep = append(keep, it) // a final stream error still goes out
		}
	}
	s2.out = keep
	c := s2.c
	s2.notify()
	s2.mu.Unlock()
	if c != nil {
		// Give the writer a moment to flush a final stream error.
		time.AfterFunc(2*time.Second, func() { c.conn.Close() })
	}
	s.smDetached.remove(s2)
	// A session replaced by a newer one for the same full JID (conflict)
	// says nothing: its resource is alive.
	if s.unbind(s2) && wasAvailable {
		s.broadcastUnavailable(s2)
	}
	s.undeliverableAll(s2.full, pending)
	release()
}
