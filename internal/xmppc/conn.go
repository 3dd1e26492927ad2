package xmppc

import (
	"bufio"
	"context"
	"crypto/sha1" //nolint:gosec // XEP-0114 handshake is defined on SHA-1
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"mellium.im/sasl"

	"xcollect.dev/xcollect/internal/wire"
)

// DefaultTimeout bounds each negotiation step (one write or one answer)
// when the caller gives none.
const DefaultTimeout = 30 * time.Second

// MaxElementBytes bounds one element read from the server (the server's
// own default limit is 256 KiB per stanza).
const MaxElementBytes = 4 << 20

// readBufferBytes is the read buffer of a stream: large enough that a
// processor or load generator taking a burst of stanzas reads it in few
// system calls.
const readBufferBytes = 16 << 10

// Conn is a negotiated (or negotiating) stream. It is not safe for
// concurrent use: during negotiation one goroutine drives it; afterwards
// the owner's read loop uses Dec and its writer uses Write.
type Conn struct {
	raw     net.Conn // TCP
	nc      net.Conn // raw or TLS over it
	Dec     *wire.Decoder
	Timeout time.Duration
	// Secure is true after STARTTLS.
	Secure bool
}

// NetConn returns the connection to read from and write to (TLS when
// negotiated).
func (c *Conn) NetConn() net.Conn { return c.nc }

// Close closes the TCP connection.
func (c *Conn) Close() error { return c.raw.Close() }

// Dial connects to addr (host:port), bounded by ctx and DefaultTimeout.
func Dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: DefaultTimeout, KeepAlive: 30 * time.Second}
	return d.DialContext(ctx, "tcp", addr)
}

// watch makes every blocking call on c fail at once when ctx ends; the
// returned stop must be called when the negotiation step is over.
func (c *Conn) watch(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, func() {
		_ = c.raw.SetDeadline(time.Unix(1, 0)) // fails only on a closed conn, which fails the step anyway
	})
}

func (c *Conn) deadline(ctx context.Context) time.Time {
	d := time.Now().Add(c.Timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		return cd
	}
	return d
}

// ctxErr prefers ctx's error over the deadline error it caused.
func ctxErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// Write writes b with a deadline from ctx and c.Timeout.
func (c *Conn) Write(ctx context.Context, b []byte) error {
	if err := c.nc.SetWriteDeadline(c.deadline(ctx)); err != nil {
		return err
	}
	_, err := c.nc.Write(b)
	return err
}

// Next reads the next element with a deadline from ctx and c.Timeout. A
// <stream:error/> is returned as a *StreamError.
func (c *Conn) Next(ctx context.Context) (*wire.Element, error) {
	if err := c.nc.SetReadDeadline(c.deadline(ctx)); err != nil {
		return nil, err
	}
	el, err := c.Dec.Next()
	if err != nil {
		return nil, err
	}
	if el.Name.Space == wire.NSStream && el.Name.Local == "error" {
		return nil, ParseStreamError(el)
	}
	return el, nil
}

// ClearDeadlines removes the negotiation deadlines before the owner's
// read loop takes over.
func (c *Conn) ClearDeadlines() error { return c.nc.SetDeadline(time.Time{}) }

// open sends our stream header and reads the server's. For c2s it also
// reads the features.
func (c *Conn) open(ctx context.Context, ns, to string) (*wire.Element, error) {
	c.Dec = wire.NewDecoder(bufio.NewReaderSize(c.nc, readBufferBytes), MaxElementBytes)
	hdr := "<?xml version='1.0'?><stream:stream xmlns='" + ns + "' xmlns:stream='http://etherx.jabber.org/streams' to='" + wire.Escape(to) + "'"
	if ns == wire.NSClient {
		hdr += " version='1.0'"
	}
	if err := c.Write(ctx, []byte(hdr+">")); err != nil {
		return nil, err
	}
	if err := c.nc.SetReadDeadline(c.deadline(ctx)); err != nil {
		return nil, err
	}
	h, err := c.Dec.Header()
	if err != nil {
		return nil, fmt.Errorf("read stream header: %w", err)
	}
	if h.Name.Space != wire.NSStream || h.Name.Local != "stream" {
		return nil, fmt.Errorf("not an XMPP stream: <%s xmlns='%s'>", h.Name.Local, h.Name.Space)
	}
	if ns != wire.NSClient {
		if h.ID == "" {
			// An error follows a header without an id.
			if _, err := c.Next(ctx); err != nil {
				return nil, err
			}
			return nil, errors.New("stream header without id")
		}
		return &wire.Element{Name: xml.Name{Local: "id"}, Raw: []byte(h.ID)}, nil
	}
	feats, err := c.Next(ctx)
	if err != nil {
		return nil, err
	}
	if feats.Name.Space != wire.NSStream || feats.Name.Local != "features" {
		return nil, fmt.Errorf("expected stream features, got %s", feats.Raw)
	}
	return feats, nil
}

// C2SConfig configures OpenC2S.
type C2SConfig struct {
	// Domain is the JID's domain, sent as the stream's 'to'.
	Domain string
	// Username and Password are the SASL credentials (the JID's localpart).
	Username, Password string
	// TLS configures STARTTLS; nil uses the system roots with ServerName
	// Domain.
	TLS *tls.Config
	// InsecureSkipVerify accepts any server certificate (self-signed test
	// nodes).
	InsecureSkipVerify bool
	// AllowPlaintext authenticates without TLS when the server does not
	// offer STARTTLS. Default false: such a server is refused.
	AllowPlaintext bool
	// SkipTLS authenticates without TLS even when the server offers
	// STARTTLS (tests of plaintext streams, benchmarks of the stream cost
	// without TLS). It implies AllowPlaintext.
	SkipTLS bool
	// Mechanism names the one SASL mechanism to use ("SCRAM-SHA-256",
	// "SCRAM-SHA-1" or "PLAIN"); the server must offer it. "" picks
	// SCRAM-SHA-256, else SCRAM-SHA-1. A SCRAM mechanism always verifies
	// the server's signature.
	Mechanism string
	// Timeout bounds each step; 0 means DefaultTimeout.
	Timeout time.Duration
}

// OpenC2S runs a client stream on nc through STARTTLS and SASL
// (SCRAM-SHA-256, else SCRAM-SHA-1) and returns the Conn with the features
// of the authenticated stream. Errors: *StreamError (see-other-host …),
// *AuthError, ErrTLSRequired, network errors. On error nc is closed.
func OpenC2S(ctx context.Context, nc net.Conn, cfg C2SConfig) (conn *Conn, feats *wire.Element, err error) {
	c := &Conn{raw: nc, nc: nc, Timeout: cfg.Timeout}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	stop := c.watch(ctx)
	defer stop()
	defer func() {
		if err != nil {
			nc.Close()
			err = ctxErr(ctx, err)
		}
	}()
	feats, err = c.open(ctx, wire.NSClient, cfg.Domain)
	if err != nil {
		return nil, nil, err
	}
	if !cfg.SkipTLS && strings.Contains(string(feats.Raw), wire.NSTLS) {
		if err := c.startTLS(ctx, cfg); err != nil {
			return nil, nil, err
		}
		if feats, err = c.open(ctx, wire.NSClient, cfg.Domain); err != nil {
			return nil, nil, err
		}
	} else if !cfg.AllowPlaintext && !cfg.SkipTLS {
		return nil, nil, ErrTLSRequired
	}
	mech, err := pickMechanism(feats, cfg.Mechanism)
	if err != nil {
		return nil, nil, err
	}
	if err := c.auth(ctx, mech, cfg.Username, cfg.Password); err != nil {
		return nil, nil, err
	}
	if feats, err = c.open(ctx, wire.NSClient, cfg.Domain); err != nil {
		return nil, nil, err
	}
	return c, feats, nil
}

func (c *Conn) startTLS(ctx context.Context, cfg C2SConfig) error {
	if err := c.Write(ctx, []byte("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")); err != nil {
		return err
	}
	el, err := c.Next(ctx)
	if err != nil {
		return err
	}
	if el.Name.Local != "proceed" {
		return fmt.Errorf("starttls refused: %s", el.Raw)
	}
	tc := cfg.TLS
	if tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		tc = tc.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = cfg.Domain
	}
	if cfg.InsecureSkipVerify {
		tc.InsecureSkipVerify = true //nolint:gosec // asked for by the caller (self-signed nodes)
	}
	tlsConn := tls.Client(c.raw, tc)
	if err := tlsConn.SetDeadline(c.deadline(ctx)); err != nil {
		return err
	}
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	c.nc, c.Secure = tlsConn, true
	return nil
}

// mechanisms are the SASL mechanisms a C2SConfig may name.
var mechanisms = map[string]sasl.Mechanism{
	sasl.ScramSha256.Name: sasl.ScramSha256,
	sasl.ScramSha1.Name:   sasl.ScramSha1,
	sasl.Plain.Name:       sasl.Plain,
}

// pickMechanism returns the mechanism named by want, which feats must
// offer, or with want "" the strongest SCRAM mechanism feats offer.
func pickMechanism(feats *wire.Element, want string) (sasl.Mechanism, error) {
	s := string(feats.Raw)
	if want != "" {
		m, ok := mechanisms[want]
		if !ok {
			return sasl.Mechanism{}, fmt.Errorf("unknown SASL mechanism %q", want)
		}
		if !strings.Contains(s, "<mechanism>"+want+"</mechanism>") {
			return sasl.Mechanism{}, fmt.Errorf("the server does not offer %s: %s", want, feats.Raw)
		}
		return m, nil
	}
	switch {
	case strings.Contains(s, "<mechanism>SCRAM-SHA-256</mechanism>"):
		return sasl.ScramSha256, nil
	case strings.Contains(s, "<mechanism>SCRAM-SHA-1</mechanism>"):
		return sasl.ScramSha1, nil
	}
	return sasl.Mechanism{}, fmt.Errorf("the server offers neither SCRAM-SHA-256 nor SCRAM-SHA-1: %s", feats.Raw)
}

func (c *Conn) auth(ctx context.Context, mech sasl.Mechanism, user, pass string) error {
	cl := sasl.NewClient(mech, sasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(pass), nil
	}))
	_, resp, err := cl.Step(nil)
	if err != nil {
		return fmt.Errorf("sasl: %w", err)
	}
	if err := c.Write(ctx, []byte("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='"+mech.Name+"'>"+b64(resp)+"</auth>")); err != nil {
		return err
	}
	for range 10 { // SCRAM needs one challenge; more is a broken server
		el, err := c.Next(ctx)
		if err != nil {
			return err
		}
		if el.Name.Space != wire.NSSASL {
			return fmt.Errorf("sasl: unexpected %s", el.Raw)
		}
		if el.Name.Local == "failure" {
			return parseAuthFailure(el)
		}
		var body struct {
			Text string `xml:",chardata"`
		}
		_ = xml.Unmarshal(el.Raw, &body) // an empty body decodes as no data
		text := strings.TrimSpace(body.Text)
		var data []byte
		if text != "" && text != "=" {
			if data, err = base64.StdEncoding.DecodeString(text); err != nil {
				return fmt.Errorf("sasl: bad base64 in %s", el.Raw)
			}
		}
		switch el.Name.Local {
		case "challenge":
			_, resp, err := cl.Step(data)
			if err != nil {
				return fmt.Errorf("sasl: %w", err)
			}
			if err := c.Write(ctx, []byte("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"+b64(resp)+"</response>")); err != nil {
				return err
			}
		case "success":
			if mech.Name == sasl.Plain.Name {
				return nil // PLAIN has no server signature to verify
			}
			if len(data) == 0 {
				return errors.New("sasl: success without the server signature: the server is not verified")
			}
			if _, _, err := cl.Step(data); err != nil {
				return fmt.Errorf("sasl: verify server signature: %w", err)
			}
			return nil
		default:
			return fmt.Errorf("sasl: unexpected %s", el.Raw)
		}
	}
	return errors.New("sasl: too many challenges")
}

func b64(b []byte) string {
	if len(b) == 0 {
		return "="
	}
	return base64.StdEncoding.EncodeToString(b)
}

// Bind binds resource ("" lets the server choose) and returns the full
// JID (RFC 6120 §7).
func (c *Conn) Bind(ctx context.Context, resource string) (string, error) {
	stop := c.watch(ctx)
	defer stop()
	iq := "<iq type='set' id='bind-" + RandomID()[:8] + "'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
	if resource != "" {
		iq += "<resource>" + wire.Escape(resource) + "</resource>"
	}
	if err := c.Write(ctx, []byte(iq+"</bind></iq>")); err != nil {
		return "", ctxErr(ctx, err)
	}
	el, err := c.Next(ctx)
	if err != nil {
		return "", ctxErr(ctx, err)
	}
	var res struct {
		Type string `xml:"type,attr"`
		JID  string `xml:"bind>jid"`
	}
	if err := xml.Unmarshal(el.Raw, &res); err != nil || res.Type != "result" || res.JID == "" {
		if res.Type == "error" {
			return "", fmt.Errorf("bind: %w", ParseStanzaError(el.Raw))
		}
		return "", fmt.Errorf("bind: unexpected %s", el.Raw)
	}
	return res.JID, nil
}

// Step writes b (if any) and reads the next element, bounded by ctx.
func (c *Conn) Step(ctx context.Context, b []byte) (*wire.Element, error) {
	stop := c.watch(ctx)
	defer stop()
	if len(b) > 0 {
		if err := c.Write(ctx, b); err != nil {
			return nil, ctxErr(ctx, err)
		}
	}
	el, err := c.Next(ctx)
	return el, ctxErr(ctx, err)
}

// OpenComponent connects the component jid over nc with the XEP-0114
// handshake. Errors: *StreamError (not-authorized, host-unknown,
// conflict …), network errors. On error nc is closed.
func OpenComponent(ctx context.Context, nc net.Conn, jid, secret string, timeout time.Duration) (conn *Conn, err error) {
	c := &Conn{raw: nc, nc: nc, Timeout: timeout}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	stop := c.watch(ctx)
	defer stop()
	defer func() {
		if err != nil {
			nc.Close()
			err = ctxErr(ctx, err)
		}
	}()
	idEl, err := c.open(ctx, wire.NSComponent, jid)
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum(append(idEl.Raw, secret...)) //nolint:gosec // XEP-0114
	if err := c.Write(ctx, []byte("<handshake>"+hex.EncodeToString(sum[:])+"</handshake>")); err != nil {
		return nil, err
	}
	el, err := c.Next(ctx)
	if err != nil {
		return nil, err
	}
	if el.Name.Local != "handshake" {
		return nil, fmt.Errorf("handshake: unexpected %s", el.Raw)
	}
	return c, nil
}
