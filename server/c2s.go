package server

import (
	"bufio"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/rs/zerolog"
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/wire"
)

// c2sConn is one client connection while its stream is negotiated (RFC 6120
// §4-§7). One goroutine owns it and writes synchronously; once a resource
// is bound it becomes a Session with its own writer.
type c2sConn struct {
	srv        *Server
	raw        net.Conn // the TCP connection
	conn       net.Conn // raw, or the TLS connection over it
	ir         *idleReader
	br         *bufio.Reader
	dec        *wire.Decoder
	log        zerolog.Logger
	secure     bool
	domain     string
	user       string // authenticated localpart
	authn      bool
	sentHeader bool
	streamID   string
	lang       string
	saslSt     *saslState
	streams    int // stream headers answered on this connection
}

// errClosed is returned after the connection was closed with a stream error.
var errClosed = errors.New("server: stream closed")

// write writes b synchronously with the write timeout.
func (c *c2sConn) write(b []byte) error {
	if err := c.conn.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout)); err != nil {
		return err
	}
	_, err := c.conn.Write(b)
	return err
}

// fail sends a stream error (with our header first if none was sent yet,
// RFC 6120 §4.9.1.1) and closes the connection.
func (c *c2sConn) fail(cond, text string) error {
	c.srv.stats.StreamErrors.Add(1)
	c.srv.stats.conditions.add(cond)
	c.log.Debug().Str("condition", cond).Str("text", text).Msg("stream error")
	var b []byte
	if !c.sentHeader {
		d := c.domain
		if d == "" {
			d = c.srv.cfg.Domains[0]
		}
		b = wire.StreamHeader(wire.NSClient, d, "", randomID(8))
	}
	b = append(b, wire.StreamError(cond, "", text)...)
	_ = c.write(b) // the peer may already be gone; we close either way
	lingerClose(c.conn)
	return fmt.Errorf("%w: %s %s", errClosed, cond, text)
}

// lingerClose half-closes conn, drains what the peer still sends for a
// moment and closes it, so that the peer reads our stream error instead of
// a reset (closing with unread input sends RST). Only the goroutine that
// reads conn may call it.
func lingerClose(conn net.Conn) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite() // best effort: Close follows
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 1<<20)) // drain until EOF, deadline or 1 MiB
	conn.Close()
}

// failDecode maps a decoder error to its stream error.
func (c *c2sConn) failDecode(err error) error {
	switch {
	case errors.Is(err, wire.ErrTooLarge):
		return c.fail(wire.PolicyViolation, fmt.Sprintf("stanza larger than %d bytes", c.srv.cfg.MaxStanzaBytes))
	case errors.Is(err, wire.ErrRestricted):
		return c.fail(wire.RestrictedXML, "")
	case errors.Is(err, wire.ErrNotWellFormed):
		return c.fail(wire.NotWellFormed, "")
	case errors.Is(err, wire.ErrInvalidXML):
		return c.fail(wire.InvalidXML, err.Error())
	case errors.Is(err, wire.ErrUnsupportedEncoding):
		return c.fail(wire.StreamUnsupportedEncod, "streams are UTF-8 (RFC 6120 §11.6)")
	case isTimeout(err):
		return c.fail(wire.ConnectionTimeout, "")
	}
	c.conn.Close()
	return fmt.Errorf("read: %w", err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// openStream reads the client's stream header and answers with ours and the
// features of the current state.
func (c *c2sConn) openStream() error {
	c.dec = wire.NewDecoder(c.br, c.srv.cfg.MaxStanzaBytes)
	h, err := c.dec.Header()
	if err != nil {
		if errors.Is(err, io.EOF) {
			c.conn.Close()
			return err
		}
		return c.failDecode(err)
	}
	if c.domain == "" && c.srv.domains[h.To] {
		c.domain = h.To
	}
	switch {
	case h.Name.Space != wire.NSStream || h.Name.Local != "stream":
		return c.fail(wire.InvalidNamespace, "stream element must be {http://etherx.jabber.org/streams}stream")
	case h.NS != wire.NSClient:
		return c.fail(wire.InvalidNamespace, "default namespace must be jabber:client")
	case h.To == "":
		return c.fail(wire.HostUnknown, "the stream header has no 'to'")
	case !c.srv.domains[h.To] || (c.domain != "" && h.To != c.domain):
		return c.fail(wire.HostUnknown, "this server does not serve "+h.To)
	case h.Version != "1.0":
		return c.fail(wire.UnsupportedVersion, "only version 1.0 is supported")
	}
	if c.srv.cfg.Steer != nil && c.streams == 0 { // only the first stream of a connection
		if host, ok := c.srv.cfg.Steer(); ok {
			c.srv.stats.StreamErrors.Add(1)
			c.srv.stats.conditions.add(wire.SeeOtherHost)
			b := wire.StreamHeader(wire.NSClient, c.domain, "", randomID(8))
			b = append(b, wire.StreamError(wire.SeeOtherHost, host, "")...)
			_ = c.write(b)
			lingerClose(c.conn)
			return fmt.Errorf("%w: see-other-host %s", errClosed, host)
		}
	}
	c.lang = h.Lang
	c.streams++
	c.streamID = randomID(8)
	// RFC 6120 §4.7.2: 'to' echoes the client's 'from' when it gave one.
	to := ""
	if j, err := jid.Parse(h.From); err == nil && h.From != "" {
		to = j.String()
	}
	b := wire.StreamHeader(wire.NSClient, c.domain, to, c.streamID)
	c.sentHeader = true
	b = append(b, c.features()...)
	return c.write(b)
}

// features lists what the client may negotiate next.
func (c *c2sConn) features() []byte {
	b := []byte("<stream:features>")
	if c.authn {
		b = append(b, "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session><sm xmlns='urn:xmpp:sm:3'/>"...)
		return append(b, "</stream:features>"...)
	}
	if !c.secure && c.srv.cfg.TLS != nil {
		b = append(b, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"...)
		if c.srv.cfg.RequireTLS {
			b = append(b, "<required/>"...)
		}
		b = append(b, "</starttls>"...)
	}
	if c.secure || !c.srv.cfg.RequireTLS {
		b = append(b, "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"...)
		for _, m := range c.mechanisms() {
			b = append(b, "<mechanism>"+m+"</mechanism>"...)
		}
		b = append(b, "</mechanisms>"...)
	}
	return append(b, "</stream:features>"...)
}

// negotiate runs the stream from the first header to a bound resource. It
// returns the new Session, or nil with a nil error when the stream resumed
// an XEP-0198 session (which then owns the connection).
func (c *c2sConn) negotiate() (*Session, error) {
	if err := c.openStream(); err != nil {
		return nil, err
	}
	for {
		el, err := c.dec.Next()
		if err != nil {
			if errors.Is(err, wire.ErrStreamEnd) {
				_ = c.write([]byte("</stream:stream>"))
				c.conn.Close()
				return nil, err
			}
			return nil, c.failDecode(err)
		}
		switch {
		case el.Name.Space == wire.NSTLS && el.Name.Local == "starttls":
			if err := c.startTLS(); err != nil {
				return nil, err
			}
		case el.Name.Space == wire.NSSASL:
			if err := c.handleSASL(el); err != nil {
				return nil, err
			}
		case !c.authn:
			return nil, c.fail(wire.NotAuthorized, "authenticate first")
		case el.Name.Space == wire.NSClient && el.Name.Local == "iq":
			sess, err := c.handleBind(el)
			if sess != nil || err != nil {
				return sess, err
			}
		case el.Name.Space == wire.NSSM && el.Name.Local == "resume":
			done, err := c.srv.resume(c, el)
			if done || err != nil {
				return nil, err
			}
		case el.Name.Space == wire.NSSM && el.Name.Local == "enable":
			_ = c.write([]byte("<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"))
		default:
			return nil, c.fail(wire.NotAuthorized, "bind a resource first")
		}
	}
}

func (c *c2sConn) startTLS() error {
	if c.secure || c.srv.cfg.TLS == nil {
		_ = c.write([]byte("<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>"))
		c.conn.Close()
		return fmt.Errorf("%w: starttls not offered", errClosed)
	}
	if err := c.write([]byte("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")); err != nil {
		return err
	}
	tc := tls.Server(c.conn, c.srv.cfg.TLS)
	if err := c.conn.SetDeadline(time.Now().Add(c.srv.cfg.NegotiationTimeout)); err != nil {
		return err
	}
	if err := tc.HandshakeContext(c.srv.ctx); err != nil {
		c.conn.Close()
		return fmt.Errorf("tls handshake: %w", err)
	}
	_ = c.conn.SetDeadline(time.Time{}) // the idle reader sets read deadlines from here on
	c.conn = tc
	c.ir.conn = tc
	c.br = bufio.NewReaderSize(c.ir, 4096)
	c.secure = true
	c.sentHeader = false // a new stream: an error before our header needs one
	return c.openStream()
}

// handleBind answers a resource binding IQ (RFC 6120 §7) and turns the
// connection into a Session.
func (c *c2sConn) handleBind(el *wire.Element) (*Session, error) {
	var iq struct {
		Type string `xml:"type,attr"`
		ID   string `xml:"id,attr"`
		Bind *struct {
			Resource string `xml:"resource"`
		} `xml:"urn:ietf:params:xml:ns:xmpp-bind bind"`
		Session *struct{} `xml:"urn:ietf:params:xml:ns:xmpp-session session"`
	}
	if err := xml.Unmarshal(el.Raw, &iq); err != nil {
		return nil, c.fail(wire.NotWellFormed, "")
	}
	if iq.Type != "set" || iq.Bind == nil {
		return nil, c.fail(wire.NotAuthorized, "bind a resource first")
	}
	res := iq.Bind.Resource
	if res == "" {
		res = randomID(6)
	}
	full, err := jid.New(c.user, c.domain, res)
	if err != nil {
		_ = c.write(wire.StanzaError(el, "modify", "bad-request", "invalid resource"))
		return nil, nil
	}
	sess := newSession(c, full)
	reply := []byte("<iq type='result'")
	reply = wire.AppendAttr(reply, "id", iq.ID)
	reply = append(reply, "><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>"...)
	reply = wire.AppendText(reply, full.String())
	reply = append(reply, "</jid></bind></iq>"...)
	if err := c.write(reply); err != nil {
		return nil, err
	}
	c.srv.bind(sess)
	return sess, nil
}
