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
		c := newConn(m, nc)
		if !m.track(c) || !m.spawn(c.serve) {
			m.untrack(c)
			nc.Close()
			return
		}
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
func (m *Manager) goOnline(component string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.online[component] > 0 && !m.specs[component].Multi {
		return false
	}
	m.online[component]++
	return true
}

func (m *Manager) goOffline(component string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.online[component]--; m.online[component] <= 0 {
		delete(m.online, component)
	}
}

// connections returns the number of live connections of component on
// this node.
func (m *Manager) connections(component string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.online[component]
}

// errClosed is returned once a connection was closed with a stream error.
var errClosed = errors.New("component: stream closed")

// negotiate runs XEP-0114 §3 on the accept side: stream header, our header
// with a fresh id, the handshake. It returns with c.spec set or an error
// after having sent the stream error. The whole exchange is bounded by a
// conn deadline (ctx deadlines are not reliable here, LIBRARY-NOTES §1).
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
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return c.failSync(reasonNotAuthorized, wire.NotAuthorized, "handshake failed")
	}
	// A second connection for a component without Multi is refused: the
	// connection that is online keeps its leases and its in-flight rows,
	// the new one gets conflict. (Kicking the old one would redeliver
	// everything it holds whenever a restarted processor races its own
	// predecessor.)
	if !c.m.goOnline(c.jid) {
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
	for _, k := range m.online {
		n += k
	}
	return n
}
