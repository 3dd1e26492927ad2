package component

import (
	"bufio"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/wire"
)

// invalidFrom is the RFC 6120 §4.9.3.9 stream error condition (wire has
// no constant for it).
const invalidFrom = "invalid-from"

// closeReason says why a component connection ended; logged.
type closeReason int

const (
	reasonNone closeReason = iota
	reasonPeerEnd
	reasonReadError
	reasonWriteError
	reasonProtocol
	reasonPolicyViolation
	reasonInvalidFrom
	reasonHostUnknown
	reasonNotAuthorized
	reasonConflict
	reasonTimeout
	reasonShutdown
)

func (r closeReason) String() string {
	names := [...]string{"none", "peer-end", "read-error", "write-error", "protocol-error",
		"policy-violation", "invalid-from", "host-unknown", "not-authorized", "conflict",
		"connection-timeout", "shutdown"}
	if int(r) < len(names) {
		return names[r]
	}
	return "unknown"
}

// outItem is one entry of a connection's outbound queue.
type outItem struct {
	b     []byte
	id    int64 // queue row id; 0 for nonzas
	sm    bool  // counted by XEP-0198: acked by <a h/>, not on flush
	final bool  // close the connection after writing it
}

// closeGrace is how long a closing connection's stream error may take to
// be written (and the reader to see the end) before the socket is closed.
const closeGrace = 2 * time.Second

// pingWait is an XEP-0199 ping the node sent and the rows written before
// it that only its answer confirms (delivery to a component without
// XEP-0198). Any answer, result or error, proves the component read
// everything before the ping.
type pingWait struct {
	id   string
	sent time.Time
	rows []int64
}

// seqID maps an XEP-0198 outbound sequence number to its queue row.
type seqID struct {
	seq uint32
	id  int64
}

// before reports a < b in 2^32 serial arithmetic.
func before(a, b uint32) bool { return int32(a-b) < 0 }

// conn is one component connection. The goroutine running serve owns the
// decoder (read loop); writeLoop owns writes to nc after the handshake;
// deliverLoop owns the store calls (claim, ack, release). They meet under
// mu.
type conn struct {
	m   *Manager
	nc  net.Conn
	id  string
	log zerolog.Logger
	dec *wire.Decoder
	jid string // the component, set by negotiate
	// set during negotiation, read-only afterwards
	sentHeader bool
	isOnline   bool

	first     chan struct{} // closed at the first element after the handshake
	firstOnce sync.Once
	done      chan struct{} // closed when the read loop ended
	wake      chan struct{} // wakes the writer
	ackWake   chan struct{} // wakes the delivery loop: rows to ack
	lastIn    atomic.Int64  // unix nanoseconds of the last element read

	mu       sync.Mutex // guards everything below
	reason   closeReason
	out      []outItem
	sm       bool   // XEP-0198 enabled
	inH      uint32 // inbound stanzas handled since <enable/>
	outSent  uint32 // outbound stanzas since <enable/>
	unacked  []seqID
	rPending bool
	rSentAt  time.Time  // when the pending <r/> was queued
	toAck    []int64    // rows delivered (acked by <a h/> or a ping answer)
	pings    []pingWait // unanswered pings, in the order written
	pingN    uint64     // pings sent
	wantPing bool       // the keepalive asks the writer for a ping
	probeAt  time.Time  // when the idle probe was sent; zero: none pending
}

func newConn(m *Manager, nc net.Conn) *conn {
	id := randomID(6)
	return &conn{
		m:       m,
		nc:      nc,
		id:      id,
		log:     m.log.With().Str("conn", id).Str("remote", nc.RemoteAddr().String()).Logger(),
		first:   make(chan struct{}),
		done:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
		ackWake: make(chan struct{}, 1),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// owner is the lease owner id of this connection.
func (c *conn) owner() string { return c.m.node + "/" + c.id }

// serve owns the connection from accept to close.
func (c *conn) serve() {
	defer c.m.untrack(c)
	defer c.nc.Close()
	if err := c.negotiate(); err != nil {
		if c.isOnline {
			c.m.goOffline(c)
		}
		c.mu.Lock() // Shutdown's closeWithError may be setting it
		reason := c.reason
		c.mu.Unlock()
		c.log.Debug().Err(err).Stringer("reason", reason).Msg("component negotiation ended")
		return
	}
	defer c.m.goOffline(c)
	c.log.Info().Str("owner", c.owner()).Msg("component online")
	c.lastIn.Store(time.Now().UnixNano())
	writerDone := make(chan struct{})
	if !c.m.spawn(func() { defer close(writerDone); c.writeLoop() }) {
		return
	}
	deliverDone := make(chan struct{})
	if !c.m.spawn(func() { defer close(deliverDone); c.deliverLoop(writerDone) }) {
		close(deliverDone)
	}
	keepDone := make(chan struct{})
	if !c.m.spawn(func() { defer close(keepDone); c.keepaliveLoop() }) {
		close(keepDone)
	}
	err := c.readLoop()
	c.connLost(err)
	close(c.done)
	<-keepDone
	<-deliverDone
	<-writerDone
	c.mu.Lock()
	reason := c.reason
	c.mu.Unlock()
	c.log.Info().Stringer("reason", reason).Msg("component offline")
}

// readLoop hands each element to the router until the stream ends.
func (c *conn) readLoop() error {
	for {
		el, err := c.dec.Next()
		if err != nil {
			return err
		}
		c.lastIn.Store(time.Now().UnixNano())
		// The delivery loop starts at the first element, but only after it
		// was handled, so an <enable/> is in force before any row is sent.
		first := func() { c.firstOnce.Do(func() { close(c.first) }) }
		switch el.Name.Space {
		case wire.NSComponent:
			switch el.Name.Local {
			case "message", "presence", "iq":
			default:
				c.closeWithError(reasonProtocol, wire.UnsupportedStanzaType, "")
				return errClosed
			}
			if !c.fromOK(el.Get("from")) {
				c.closeWithError(reasonInvalidFrom, invalidFrom, "'from' must be "+c.jid+" or a JID at it")
				return errClosed
			}
			if !c.pingAnswered(el) {
				c.m.router.RouteFromComponent(c.jid, el)
			}
			c.mu.Lock()
			if c.sm {
				c.inH++
			}
			c.mu.Unlock()
			first()
		case wire.NSSM:
			if !c.handleSM(el) {
				return errClosed
			}
			first()
		default:
			c.closeWithError(reasonProtocol, wire.UnsupportedStanzaType, "")
			return errClosed
		}
	}
}

// pingAnswered reports whether el answers one of the node's pings and, if
// so, confirms the rows written before that ping (and before every earlier
// one: the component reads in order).
func (c *conn) pingAnswered(el *wire.Element) bool {
	if el.Name.Local != "iq" || (el.Get("type") != "result" && el.Get("type") != "error") {
		return false
	}
	id := el.Get("id")
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.pings {
		if c.pings[k].id != id {
			continue
		}
		n := len(c.toAck)
		for _, p := range c.pings[:k+1] {
			c.toAck = append(c.toAck, p.rows...)
		}
		c.pings = append(c.pings[:0], c.pings[k+1:]...)
		if len(c.toAck) > n {
			signal(c.ackWake)
		}
		return true
	}
	return false
}

// pingLocked registers a ping that confirms rows and returns its bytes.
// Called with c.mu held, before the ping is written.
func (c *conn) pingLocked(rows []int64) []byte {
	c.pingN++
	id := "xc-" + c.id + "-" + strconv.FormatUint(c.pingN, 10)
	c.pings = append(c.pings, pingWait{id: id, sent: time.Now(), rows: rows})
	return []byte("<iq type='get' id='" + id + "' from='" + wire.Escape(c.m.domainOf(c.jid)) +
		"' to='" + wire.Escape(c.jid) + "'><ping xmlns='urn:xmpp:ping'/></iq>")
}

// keepaliveLoop probes an idle component (a ping, or <r/> with XEP-0198)
// and closes the stream with connection-timeout when a ping or the probe
// stays unanswered for PingTimeout, so that a hung processor gives way to
// its replacement and its rows go to the next connection. It ends with the
// read loop.
func (c *conn) keepaliveLoop() {
	cfg := c.m.cfg
	every := min(max(min(cfg.IdleTimeout, cfg.PingTimeout)/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case now := <-t.C:
			if !c.checkAlive(now) {
				return
			}
		}
	}
}

// checkAlive runs one keepalive step at now; false when the connection is
// closing.
func (c *conn) checkAlive(now time.Time) bool {
	cfg := c.m.cfg
	last := time.Unix(0, c.lastIn.Load())
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reason != reasonNone {
		return false
	}
	silentProbe := !c.probeAt.IsZero() && !last.After(c.probeAt)
	silentR := c.sm && c.rPending && !last.After(c.rSentAt) // XEP-0198: <r/> for unacked rows
	switch {
	case len(c.pings) > 0 && now.Sub(c.pings[0].sent) >= cfg.PingTimeout,
		silentProbe && now.Sub(c.probeAt) >= cfg.PingTimeout,
		silentR && now.Sub(c.rSentAt) >= cfg.PingTimeout:
		c.log.Warn().Dur("ping_timeout", cfg.PingTimeout).Int("unanswered_pings", len(c.pings)).
			Msg("component did not answer; closing its stream, its rows go to the next connection")
		c.closeLocked(reasonTimeout, wire.ConnectionTimeout, "no answer to a ping within "+cfg.PingTimeout.String())
		return false
	case !c.probeAt.IsZero() && !silentProbe:
		c.probeAt = time.Time{} // answered
	case c.probeAt.IsZero() && now.Sub(last) >= cfg.IdleTimeout:
		c.probeLocked(now)
	}
	return true
}

// probe asks the processor to prove it is alive: a ping, or <r/> with
// XEP-0198. checkAlive closes the stream when nothing arrives within
// PingTimeout. A probe already pending is left as it is.
func (c *conn) probe(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reason == reasonNone && c.probeAt.IsZero() {
		c.probeLocked(now)
	}
}

// probeLocked sends the probe; called with c.mu held.
func (c *conn) probeLocked(now time.Time) {
	c.probeAt = now
	if c.sm {
		c.queue(outItem{b: []byte("<r xmlns='urn:xmpp:sm:3'/>")})
	} else {
		c.wantPing = true
		signal(c.wake)
	}
}

// fromOK reports whether from is the component's domain or a JID at it.
func (c *conn) fromOK(from string) bool {
	if from == "" {
		return false
	}
	j, err := jid.Parse(from)
	return err == nil && j.Domainpart() == c.jid
}

// handleSM processes an XEP-0198 element; false ends the stream.
func (c *conn) handleSM(el *wire.Element) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch el.Name.Local {
	case "enable":
		if c.sm {
			c.queue(outItem{b: []byte("<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")})
			return true
		}
		// No resumption: a component that reconnects gets its unacked rows
		// again from the queue, which is what resumption would give it.
		c.sm = true
		c.queue(outItem{b: []byte("<enabled xmlns='urn:xmpp:sm:3' id='" + randomID(8) + "'/>")})
	case "r":
		if c.sm {
			c.queue(outItem{b: wire.Ack(c.inH)})
		}
	case "a":
		h64, err := strconv.ParseUint(el.Get("h"), 10, 32)
		if err != nil {
			c.closeLocked(reasonProtocol, wire.UndefinedCondition, "invalid h")
			return false
		}
		h := uint32(h64)
		if !c.sm {
			return true
		}
		if before(c.outSent, h) {
			// XEP-0198 §4: acking more than was sent is an error.
			c.closeLocked(reasonProtocol, wire.UndefinedCondition, "h acknowledges more stanzas than were sent")
			return false
		}
		n := 0
		for n < len(c.unacked) && !before(h, c.unacked[n].seq) {
			c.toAck = append(c.toAck, c.unacked[n].id)
			n++
		}
		c.unacked = append(c.unacked[:0], c.unacked[n:]...)
		c.rPending = false
		signal(c.wake) // more unacked rows may need a new <r/>
		if n > 0 {
			signal(c.ackWake)
		}
	default:
		c.queue(outItem{b: []byte("<failed xmlns='urn:xmpp:sm:3'><feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")})
	}
	return true
}

// queue appends an item for the writer. Called with c.mu held.
func (c *conn) queue(it outItem) {
	c.out = append(c.out, it)
	signal(c.wake)
}

// sendRows queues claimed rows for the writer, in claim order. It reports
// false when the connection is closing (the rows are released later).
func (c *conn) sendRows(rows []rowOut) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reason != reasonNone {
		return false
	}
	for _, r := range rows {
		it := outItem{b: r.b, id: r.id}
		if c.sm {
			c.outSent++
			c.unacked = append(c.unacked, seqID{seq: c.outSent, id: r.id})
			it.sm = true
		}
		c.out = append(c.out, it)
	}
	signal(c.wake)
	return true
}

// takeAcks returns the rows delivered since the last call.
func (c *conn) takeAcks() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := c.toAck
	c.toAck = nil
	return ids
}

// closeWithError ends the connection with a stream error: the writer
// flushes it and closes the socket; the read loop is unblocked by a
// deadline in case the writer is stuck.
func (c *conn) closeWithError(reason closeReason, cond, text string) {
	c.mu.Lock()
	c.closeLocked(reason, cond, text)
	c.mu.Unlock()
}

// closeLocked is closeWithError with c.mu held.
func (c *conn) closeLocked(reason closeReason, cond, text string) {
	if c.reason != reasonNone {
		return
	}
	c.reason = reason
	c.queue(outItem{b: wire.StreamError(cond, "", text), final: true})
	c.log.Debug().Stringer("reason", reason).Str("condition", cond).Msg("closing component stream")
	// Closing only the read side is not possible; deadlines unblock the
	// reader if the peer keeps the socket open, and a writer stuck on a
	// peer that does not read.
	_ = c.nc.SetDeadline(time.Now().Add(closeGrace)) // fails only on a closed conn
}

// connLost records why the read loop ended and sends what is owed.
func (c *conn) connLost(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reason != reasonNone {
		return
	}
	switch {
	case errors.Is(err, wire.ErrStreamEnd):
		c.reason = reasonPeerEnd
		c.queue(outItem{b: []byte("</stream:stream>"), final: true})
	case errors.Is(err, wire.ErrTooLarge):
		c.closeLocked(reasonPolicyViolation, wire.PolicyViolation, "stanza larger than "+strconv.Itoa(c.m.cfg.MaxStanzaBytes)+" bytes")
	case errors.Is(err, wire.ErrNotWellFormed), errors.Is(err, wire.ErrRestricted):
		c.closeLocked(reasonProtocol, wire.NotWellFormed, "")
	case errors.Is(err, wire.ErrInvalidXML):
		c.closeLocked(reasonProtocol, wire.InvalidXML, err.Error())
	default:
		c.reason = reasonReadError
		c.nc.Close()
	}
}

// writeLoop drains the outbound queue onto nc, one flush per batch. After
// stanzas it requests acks when XEP-0198 is on; without it, it follows the
// rows of each batch with a ping whose answer confirms them (pingLocked).
// It closes nc when it returns.
func (c *conn) writeLoop() {
	bw := bufio.NewWriterSize(c.nc, 16<<10)
	defer c.nc.Close()
	for {
		c.mu.Lock()
		items := c.out
		c.out = nil
		needR := c.sm && len(c.unacked) > 0 && !c.rPending
		if needR {
			c.rPending, c.rSentAt = true, time.Now()
		}
		probe := c.wantPing
		c.wantPing = false
		closing := c.reason != reasonNone
		c.mu.Unlock()
		if len(items) == 0 && !needR && !probe {
			select {
			case <-c.wake:
				continue
			case <-c.done:
			}
			c.mu.Lock()
			empty := len(c.out) == 0
			c.mu.Unlock()
			if empty {
				return
			}
			continue
		}
		timeout := c.m.cfg.WriteTimeout
		if closing {
			timeout = closeGrace
		}
		if err := c.nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
			c.writeFailed(err)
			return
		}
		final := false
		var plain []int64 // rows that only a ping answer confirms
		for _, it := range items {
			if _, err := bw.Write(it.b); err != nil {
				c.writeFailed(err)
				return
			}
			if it.id != 0 && !it.sm {
				plain = append(plain, it.id)
			}
			if it.final {
				final = true
				break
			}
		}
		if (len(plain) > 0 || probe) && !final {
			c.mu.Lock()
			ping := c.pingLocked(plain)
			c.mu.Unlock()
			_, _ = bw.Write(ping) // an error shows at Flush
		}
		if needR && !final {
			_, _ = bw.WriteString("<r xmlns='urn:xmpp:sm:3'/>") // an error shows at Flush
		}
		if err := bw.Flush(); err != nil {
			c.writeFailed(err)
			return
		}
		if final {
			return
		}
	}
}

// writeFailed records a write error and closes the socket, which ends the
// read loop.
func (c *conn) writeFailed(err error) {
	c.log.Debug().Err(err).Msg("write to component failed")
	c.mu.Lock()
	if c.reason == reasonNone {
		c.reason = reasonWriteError
	}
	c.mu.Unlock()
	c.nc.Close()
}
