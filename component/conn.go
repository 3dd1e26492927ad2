package component

import (
	"bufio"
	"errors"
	"net"
	"strconv"
	"sync"
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

	mu       sync.Mutex // guards everything below
	reason   closeReason
	out      []outItem
	sm       bool   // XEP-0198 enabled
	inH      uint32 // inbound stanzas handled since <enable/>
	outSent  uint32 // outbound stanzas since <enable/>
	unacked  []seqID
	rPending bool
	toAck    []int64 // rows delivered (flushed or acked by the component)
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
			c.m.goOffline(c.jid)
		}
		c.log.Debug().Err(err).Stringer("reason", c.reason).Msg("component negotiation ended")
		return
	}
	defer c.m.goOffline(c.jid)
	c.log.Info().Str("owner", c.owner()).Msg("component online")
	writerDone := make(chan struct{})
	if !c.m.spawn(func() { defer close(writerDone); c.writeLoop() }) {
		return
	}
	deliverDone := make(chan struct{})
	if !c.m.spawn(func() { defer close(deliverDone); c.deliverLoop(writerDone) }) {
		close(deliverDone)
	}
	err := c.readLoop()
	c.connLost(err)
	close(c.done)
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
			c.m.router.RouteFromComponent(c.jid, el)
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
	// Closing only the read side is not possible; a deadline unblocks the
	// reader if the peer keeps the socket open.
	_ = c.nc.SetReadDeadline(time.Now().Add(2 * time.Second)) // fails only on a closed conn
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

// writeLoop drains the outbound queue onto nc, one flush per batch, and
// requests acks after stanzas when XEP-0198 is on. It closes nc when it
// returns.
func (c *conn) writeLoop() {
	bw := bufio.NewWriterSize(c.nc, 16<<10)
	defer c.nc.Close()
	var flushed []int64
	for {
		c.mu.Lock()
		items := c.out
		c.out = nil
		needR := c.sm && len(c.unacked) > 0 && !c.rPending
		if needR {
			c.rPending = true
		}
		c.mu.Unlock()
		if len(items) == 0 && !needR {
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
		if err := c.nc.SetWriteDeadline(time.Now().Add(c.m.cfg.WriteTimeout)); err != nil {
			c.writeFailed(err)
			return
		}
		final := false
		flushed = flushed[:0]
		for _, it := range items {
			if _, err := bw.Write(it.b); err != nil {
				c.writeFailed(err)
				return
			}
			if it.id != 0 && !it.sm {
				flushed = append(flushed, it.id)
			}
			if it.final {
				final = true
				break
			}
		}
		if needR && !final {
			_, _ = bw.WriteString("<r xmlns='urn:xmpp:sm:3'/>") // an error shows at Flush
		}
		if err := bw.Flush(); err != nil {
			c.writeFailed(err)
			return
		}
		if len(flushed) > 0 {
			// Plain XEP-0114: delivery-on-write.
			c.mu.Lock()
			c.toAck = append(c.toAck, flushed...)
			c.mu.Unlock()
			signal(c.ackWake)
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
