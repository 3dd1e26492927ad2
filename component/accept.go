package component

import (
	"bufio"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"xcollect.dev/xcollect/internal/connlimit"
	"xcollect.dev/xcollect/internal/wire"
)

// acceptLoop accepts component connections until the listener closes.
func (m *Manager) acceptLoop(ln net.Listener) {
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, do not spin.
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			m.log.Warn().Err(err).Dur("retry_in", delay).Msg("accept component connection")
			select {
			case <-time.After(delay):
			case <-m.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		ip := connlimit.IP(nc)
		if ref, ok := m.limit.Acquire(ip); !ok {
			m.refuse(nc, ref)
			continue
		}
		c := newConn(m, nc)
		if !m.track(c) || !m.spawn(func() {
			defer m.limit.Release(ip)
			c.serve()
		}) {
			m.untrack(c)
			m.limit.Release(ip)
			nc.Close()
			return
		}
	}
}

// maxRefusing bounds the goroutines writing refusals; beyond it a refused
// connection is closed without a stream error.
const maxRefusing = 64

// refuse answers a connection over the limits with our stream header and
// the stream error (RFC 6120 §4.9.1.1), then closes it.
func (m *Manager) refuse(nc net.Conn, ref connlimit.Refusal) {
	m.log.Warn().Str("remote", nc.RemoteAddr().String()).Str("condition", ref.Condition).Msg("component connection refused: connection limit")
	if m.refusing.Add(1) > maxRefusing {
		m.refusing.Add(-1)
		nc.Close()
		return
	}
	if !m.spawn(func() {
		defer m.refusing.Add(-1)
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(2 * time.Second)) // bounds the TLS handshake and the write
		b := wire.StreamHeader(wire.NSComponent, "", "", randomID(12))
		b = append(b, wire.StreamError(ref.Condition, "", ref.Text)...)
		if _, err := nc.Write(b); err != nil {
			return
		}
		// Read what the processor sent meanwhile, so that the close is
		// not a reset that discards our stream error.
		_ = nc.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = io.Copy(io.Discard, io.LimitReader(nc, 64<<10))
	}) {
		m.refusing.Add(-1)
		nc.Close()
	}
}

// track registers c for Shutdown; false after Shutdown began.
func (m *Manager) track(c *conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.conns[c] = struct{}{}
	return true
}

func (m *Manager) untrack(c *conn) {
	m.mu.Lock()
	delete(m.conns, c)
	m.mu.Unlock()
}

// goOnline counts an authenticated connection of component; false when
// the component does not allow several connections and one is online.
func (m *Manager) goOnline(c *conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	held := m.online[c.jid]
	if len(held) > 0 && !m.specs[c.jid].Multi {
		return false
	}
	if held == nil {
		held = make(map[*conn]struct{})
		m.online[c.jid] = held
	}
	held[c] = struct{}{}
	return true
}

func (m *Manager) goOffline(c *conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.online[c.jid], c)
	if len(m.online[c.jid]) == 0 {
		delete(m.online, c.jid)
	}
}

// probeHolders asks every connection that holds component on this node to
// prove it is alive now (a ping, or <r/> with XEP-0198), instead of after
// its idle timeout: a refused replacement means the old processor may be
// hung (SIGSTOP, a stuck event loop). A silent holder is closed within
// PingTimeout and the replacement's next attempt succeeds.
func (m *Manager) probeHolders(component string) {
	m.mu.Lock()
	held := make([]*conn, 0, len(m.online[component]))
	for c := range m.online[component] {
		held = append(held, c)
	}
	m.mu.Unlock()
	now := time.Now()
	for _, c := range held {
		c.probe(now)
	}
}

// connections returns the number of live connections of component on
// this node.
func (m *Manager) connections(component string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.online[component])
}

// ConnectionsOf returns the number of live connections of component on
// this node (for the metrics).
func (m *Manager) ConnectionsOf(component string) int { return m.connections(component) }

// errClosed is returned once a connection was closed with a stream error.
var errClosed = errors.New("component: stream closed")

// negotiate runs XEP-0114 §3 on the accept side: stream header, our header
// with a fresh id, the handshake. It returns with c.spec set or an error
// after having sent the stream error. The whole exchange is bounded by a
// conn deadline: a read blocked on the socket ignores ctx; only a deadline
// unblocks it.
func (c *conn) negotiate() error {
	if err := c.nc.SetDeadline(time.Now().Add(c.m.cfg.NegotiationTimeout)); err != nil {
		return err
	}
	c.dec = wire.NewDecoder(bufio.NewReaderSize(c.nc, 4096), c.m.cfg.MaxStanzaBytes)
	h, err := c.dec.Header()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return err
		}
		return c.failDecode(err)
	}
	switch {
	case h.Name.Space != wire.NSStream || h.Name.Local != "stream":
		return c.failSync(reasonProtocol, wire.InvalidNamespace, "stream element must be {http://etherx.jabber.org/streams}stream")
	case h.NS != wire.NSComponent:
		return c.failSync(reasonProtocol, wire.InvalidNamespace, "default namespace must be jabber:component:accept")
	case h.To == "" || c.m.specs[h.To] == nil:
		return c.failSync(reasonHostUnknown, wire.HostUnknown, "no component "+h.To+" is configured")
	}
	spec := c.m.specs[h.To]
	c.jid = spec.JID
	c.mu.Lock() // closeLocked (Shutdown) reads c.log under c.mu
	c.log = c.log.With().Str("component", c.jid).Logger()
	c.mu.Unlock()
	if c.m.cfg.Steer != nil {
		if host, ok := c.m.cfg.Steer(); ok {
			b := wire.StreamHeader(wire.NSComponent, c.jid, "", randomID(12))
			b = append(b, wire.StreamError(wire.SeeOtherHost, host, "")...)
			_ = c.writeSync(b) // the processor may be gone; we close either way
			return fmt.Errorf("%w: see-other-host %s", errClosed, host)
		}
	}
	streamID := randomID(12)
	if err := c.writeSync(wire.StreamHeader(wire.NSComponent, c.jid, "", streamID)); err != nil {
		return err
	}
	c.sentHeader = true
	el, err := c.dec.Next()
	if err != nil {
		return c.failDecode(err)
	}
	if el.Name.Space != wire.NSComponent || el.Name.Local != "handshake" {
		return c.failSync(reasonNotAuthorized, wire.NotAuthorized, "send <handshake/> first")
	}
	var hs struct {
		Text string `xml:",chardata"`
	}
	if err := xml.Unmarshal(el.Raw, &hs); err != nil {
		return c.failSync(reasonProtocol, wire.NotWellFormed, "")
	}
	sum := sha1.Sum([]byte(streamID + spec.Secret))
	want := hex.EncodeToString(sum[:])
	got := strings.ToLower(strings.TrimSpace(hs.Text))
	ip := connlimit.IP(c.nc)
	now := time.Now()
	// A component that many addresses failed for (a guesser rotating its
	// source address) is in penalty as a whole: a few handshakes at a time,
	// each waiting.
	compDelay := c.m.compPenalty.Delay(c.jid, now)
	if compDelay > 0 {
		if !c.m.handshaking.Enter(c.jid, c.m.cfg.HandshakeComponentMaxConcurrent) {
			return c.failSync(reasonPolicyViolation, wire.PolicyViolation, "too many handshakes for this component at once; retry later")
		}
		defer c.m.handshaking.Leave(c.jid)
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		delay := max(c.m.penalty.Fail(ip, now), c.m.compPenalty.Fail(c.jid, now))
		// Never the secret nor the digest. A storm logs one line per
		// component every few seconds, with the count it stands for.
		if ok, suppressed := c.m.failLog.Allow(c.jid, now); ok {
			c.log.Warn().Dur("delay", delay).Int("unlogged_failures", suppressed).Msg("component handshake failed: wrong secret")
		}
		if !c.m.sleep(delay) {
			return c.failSync(reasonShutdown, wire.SystemShutdown, "")
		}
		return c.failSync(reasonNotAuthorized, wire.NotAuthorized, "handshake failed")
	}
	// An address or component in penalty waits for a right secret too, so
	// that silence does not tell a guesser its guess was wrong.
	if !c.m.sleep(max(c.m.penalty.Delay(ip, now), compDelay)) {
		return c.failSync(reasonShutdown, wire.SystemShutdown, "")
	}
	// A second connection for a component without Multi is refused: the
	// connection that is online keeps its leases and its in-flight rows,
	// the new one gets conflict. (Kicking the old one would redeliver
	// everything it holds whenever a restarted processor races its own
	// predecessor.) The holder is probed at once, so a hung one is closed
	// within PingTimeout and the replacement's retry gets in.
	if !c.m.goOnline(c) {
		c.m.probeHolders(c.jid)
		return c.failSync(reasonConflict, wire.Conflict, "component "+c.jid+" is already connected and does not allow several connections")
	}
	c.isOnline = true
	if err := c.writeSync([]byte("<handshake/>")); err != nil {
		return err
	}
	return c.nc.SetDeadline(time.Time{})
}

// writeSync writes b during negotiation (before the writer goroutine
// exists).
func (c *conn) writeSync(b []byte) error {
	if err := c.nc.SetWriteDeadline(time.Now().Add(c.m.cfg.WriteTimeout)); err != nil {
		return err
	}
	_, err := c.nc.Write(b)
	return err
}

// failSync sends a stream error during negotiation (with our header first
// if none was sent yet, RFC 6120 §4.9.1.1) and closes the connection.
func (c *conn) failSync(reason closeReason, cond, text string) error {
	c.mu.Lock()
	if c.reason == reasonNone {
		c.reason = reason
	}
	c.mu.Unlock()
	var b []byte
	if !c.sentHeader {
		from := c.jid
		b = wire.StreamHeader(wire.NSComponent, from, "", randomID(12))
	}
	b = append(b, wire.StreamError(cond, "", text)...)
	_ = c.writeSync(b) // the peer may be gone already; we close either way
	c.nc.Close()
	return fmt.Errorf("%w: %s %s", errClosed, cond, text)
}

// failDecode maps a decoder error during negotiation to its stream error.
func (c *conn) failDecode(err error) error {
	switch {
	case errors.Is(err, wire.ErrTooLarge):
		return c.failSync(reasonPolicyViolation, wire.PolicyViolation, fmt.Sprintf("element larger than %d bytes", c.m.cfg.MaxStanzaBytes))
	case errors.Is(err, wire.ErrRestricted):
		return c.failSync(reasonProtocol, wire.RestrictedXML, "")
	case errors.Is(err, wire.ErrNotWellFormed):
		return c.failSync(reasonProtocol, wire.NotWellFormed, "")
	case errors.Is(err, wire.ErrInvalidXML):
		return c.failSync(reasonProtocol, wire.InvalidXML, err.Error())
	case errors.Is(err, wire.ErrUnsupportedEncoding):
		return c.failSync(reasonProtocol, wire.StreamUnsupportedEncod, "streams are UTF-8 (RFC 6120 §11.6)")
	case isTimeout(err):
		return c.failSync(reasonTimeout, wire.ConnectionTimeout, "handshake not completed in time")
	case errors.Is(err, wire.ErrStreamEnd):
		_ = c.writeSync([]byte("</stream:stream>")) // polite close; we close either way
	}
	c.nc.Close()
	return fmt.Errorf("component: read: %w", err)
}

// sleep waits d; false when Shutdown began.
func (m *Manager) sleep(d time.Duration) bool { return connlimit.Sleep(m.ctx, d) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Connections returns the number of live component connections on this
// node (all components), for the node's load in the cluster.
func (m *Manager) Connections() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, held := range m.online {
		n += len(held)
	}
	return n
}
