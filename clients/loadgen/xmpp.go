package main

import (
	"bufio"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"mellium.im/sasl"

	"xcollect.dev/xcollect/internal/wire"
)

// stepTimeout bounds each negotiation step and each write.
const stepTimeout = 10 * time.Second

// conn is one XMPP connection (c2s or component) spoken with raw bytes:
// negotiation is synchronous, then exactly one goroutine reads with next
// and any goroutine writes with write.
type conn struct {
	nc  net.Conn
	dec *wire.Decoder
	wmu sync.Mutex
	bw  *bufio.Writer

	jid      string // bound full JID or component JID
	features string // last stream features (raw)
	smOffer  bool   // the server offered urn:xmpp:sm:3 after auth
}

func (c *conn) rawWrite(s string) error {
	if err := c.nc.SetWriteDeadline(time.Now().Add(stepTimeout)); err != nil {
		return err
	}
	if _, err := c.bw.WriteString(s); err != nil {
		return err
	}
	return c.bw.Flush()
}

// write sends raw XML; safe for concurrent use.
func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.nc.SetWriteDeadline(time.Now().Add(stepTimeout)); err != nil {
		return err
	}
	if _, err := c.bw.Write(b); err != nil {
		return err
	}
	return c.bw.Flush()
}

// next reads one top-level element; a <stream:error/> is returned as an
// error.
func (c *conn) next() (*wire.Element, error) {
	el, err := c.dec.Next()
	if err != nil {
		return nil, err
	}
	if el.Name.Space == wire.NSStream && el.Name.Local == "error" {
		return nil, fmt.Errorf("stream error: %s", el.Raw)
	}
	return el, nil
}

func (c *conn) close() {
	_ = c.write([]byte("</stream:stream>")) // the peer may be gone
	c.nc.Close()
}

func (c *conn) reset(nc net.Conn) {
	c.nc = nc
	c.bw = bufio.NewWriterSize(nc, 4096)
	c.dec = wire.NewDecoder(bufio.NewReaderSize(nc, 16384), 0)
}

// open sends a stream header and reads the peer's header and, for c2s, the
// features.
func (c *conn) open(ns, to string) (wire.Header, error) {
	if err := c.rawWrite("<?xml version='1.0'?><stream:stream xmlns='" + ns +
		"' xmlns:stream='http://etherx.jabber.org/streams' to='" + to + "' version='1.0'>"); err != nil {
		return wire.Header{}, err
	}
	h, err := c.dec.Header()
	if err != nil {
		return h, fmt.Errorf("stream header: %w", err)
	}
	if ns == wire.NSClient {
		el, err := c.next()
		if err != nil {
			return h, fmt.Errorf("features: %w", err)
		}
		c.features = string(el.Raw)
	}
	return h, nil
}

// c2sOptions configure dialC2S.
type c2sOptions struct {
	addr, domain, user, pass string
	startTLS                 bool
	mech                     string // SCRAM-SHA-1 (default), SCRAM-SHA-256, PLAIN
	resource                 string
}

// dialC2S connects, optionally negotiates STARTTLS, authenticates and
// binds. It does not enable stream management.
func dialC2S(o c2sOptions) (*conn, error) {
	nc, err := net.DialTimeout("tcp", o.addr, stepTimeout)
	if err != nil {
		return nil, err
	}
	c := &conn{}
	c.reset(nc)
	if err := c.negotiate(o); err != nil {
		nc.Close()
		if c.nc != nc {
			c.nc.Close()
		}
		return nil, err
	}
	return c, nil
}

func (c *conn) negotiate(o c2sOptions) error {
	if err := c.nc.SetDeadline(time.Now().Add(stepTimeout)); err != nil {
		return err
	}
	if _, err := c.open(wire.NSClient, o.domain); err != nil {
		return err
	}
	if o.startTLS {
		if !strings.Contains(c.features, "xmpp-tls") {
			return errors.New("server does not offer STARTTLS")
		}
		if err := c.rawWrite("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"); err != nil {
			return err
		}
		el, err := c.next()
		if err != nil {
			return err
		}
		if el.Name.Local != "proceed" {
			return fmt.Errorf("starttls: %s", el.Raw)
		}
		tc := tls.Client(c.nc, &tls.Config{InsecureSkipVerify: true, ServerName: o.domain}) //nolint:gosec // benchmarks against self-signed certificates
		if err := tc.SetDeadline(time.Now().Add(stepTimeout)); err != nil {
			return err
		}
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("tls handshake: %w", err)
		}
		c.reset(tc)
		if _, err := c.open(wire.NSClient, o.domain); err != nil {
			return err
		}
	}
	mech := o.mech
	if mech == "" {
		mech = "SCRAM-SHA-1"
	}
	if !strings.Contains(c.features, "<mechanism>"+mech+"</mechanism>") {
		return fmt.Errorf("server does not offer %s: %s", mech, c.features)
	}
	if err := c.auth(mech, o.user, o.pass); err != nil {
		return err
	}
	if _, err := c.open(wire.NSClient, o.domain); err != nil {
		return err
	}
	c.smOffer = strings.Contains(c.features, wire.NSSM)
	bind := "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
	if o.resource != "" {
		bind += "<resource>" + o.resource + "</resource>"
	}
	if err := c.rawWrite(bind + "</bind></iq>"); err != nil {
		return err
	}
	el, err := c.next()
	if err != nil {
		return err
	}
	var res struct {
		Type string `xml:"type,attr"`
		JID  string `xml:"bind>jid"`
	}
	if err := xml.Unmarshal(el.Raw, &res); err != nil || res.Type != "result" || res.JID == "" {
		return fmt.Errorf("bind: %s", el.Raw)
	}
	c.jid = res.JID
	if strings.Contains(c.features, wire.NSSession) && !strings.Contains(c.features, "<optional") {
		// RFC 3921 session establishment for servers that still require it.
		if err := c.rawWrite("<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"); err != nil {
			return err
		}
		if _, err := c.next(); err != nil {
			return err
		}
	}
	return c.nc.SetDeadline(time.Time{})
}

func (c *conn) auth(mech, user, pass string) error {
	var m sasl.Mechanism
	switch mech {
	case "SCRAM-SHA-1":
		m = sasl.ScramSha1
	case "SCRAM-SHA-256":
		m = sasl.ScramSha256
	case "PLAIN":
		m = sasl.Plain
	default:
		return fmt.Errorf("unknown mechanism %q", mech)
	}
	cl := sasl.NewClient(m, sasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(pass), nil
	}))
	_, resp, err := cl.Step(nil)
	if err != nil {
		return fmt.Errorf("sasl: %w", err)
	}
	if err := c.rawWrite("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + mech + "'>" + b64(resp) + "</auth>"); err != nil {
		return err
	}
	for range 8 {
		el, err := c.next()
		if err != nil {
			return err
		}
		var body struct {
			Text string `xml:",chardata"`
		}
		_ = xml.Unmarshal(el.Raw, &body) // an odd body fails below
		txt := strings.TrimSpace(body.Text)
		data, derr := base64.StdEncoding.DecodeString(txt)
		if derr != nil && txt != "=" {
			return fmt.Errorf("sasl: bad base64 in %s", el.Raw)
		}
		switch el.Name.Local {
		case "challenge":
			_, resp, err := cl.Step(data)
			if err != nil {
				return fmt.Errorf("sasl: %w", err)
			}
			if err := c.rawWrite("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + b64(resp) + "</response>"); err != nil {
				return err
			}
		case "success":
			if len(data) > 0 && strings.HasPrefix(mech, "SCRAM") {
				if _, _, err := cl.Step(data); err != nil {
					return fmt.Errorf("sasl: verify server: %w", err)
				}
			}
			return nil
		default:
			return fmt.Errorf("sasl: %s", el.Raw)
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

// enableSM sends <enable/> and waits up to wait for <enabled/>. Stanzas
// that arrive meanwhile are returned for the caller to process. ok is
// false on <failed/> or silence.
func (c *conn) enableSM(wait time.Duration, resume bool) (ok bool, early []*wire.Element, err error) {
	enable := "<enable xmlns='urn:xmpp:sm:3'/>"
	if resume {
		enable = "<enable xmlns='urn:xmpp:sm:3' resume='true'/>"
	}
	if err := c.rawWrite(enable); err != nil {
		return false, nil, err
	}
	if err := c.nc.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return false, nil, err
	}
	defer c.nc.SetReadDeadline(time.Time{}) //nolint:errcheck // best effort
	for range 1000 {
		el, err := c.next()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// A timeout may leave the decoder mid-token: only safe
				// because nothing was sent to us; callers treat the
				// connection as unusable for SM and redial.
				return false, early, errSMTimeout
			}
			return false, early, err
		}
		if el.Name.Space == wire.NSSM {
			return el.Name.Local == "enabled", early, nil
		}
		early = append(early, el)
	}
	return false, early, errors.New("enable: no answer")
}

var errSMTimeout = errors.New("no answer to <enable/>")

// dialComponent connects an XEP-0114 component and completes the
// handshake.
func dialComponent(addr, jid, secret string) (*conn, error) {
	nc, err := net.DialTimeout("tcp", addr, stepTimeout)
	if err != nil {
		return nil, err
	}
	c := &conn{jid: jid}
	c.reset(nc)
	fail := func(err error) (*conn, error) {
		nc.Close()
		return nil, err
	}
	if err := nc.SetDeadline(time.Now().Add(stepTimeout)); err != nil {
		return fail(err)
	}
	h, err := c.open(wire.NSComponent, jid)
	if err != nil {
		return fail(err)
	}
	if h.ID == "" {
		if _, err := c.next(); err != nil {
			return fail(err)
		}
		return fail(errors.New("stream header without id"))
	}
	sum := sha1.Sum([]byte(h.ID + secret))
	if err := c.rawWrite("<handshake>" + hex.EncodeToString(sum[:]) + "</handshake>"); err != nil {
		return fail(err)
	}
	el, err := c.next()
	if err != nil {
		return fail(err)
	}
	if el.Name.Local != "handshake" {
		return fail(fmt.Errorf("handshake: %s", el.Raw))
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return fail(err)
	}
	return c, nil
}

// dialComponentSM dials a component and enables XEP-0198 according to
// mode: "on" (required), "off", or "auto" (try, and redial plain when the
// server answers <failed/>, closes the stream or stays silent).
func dialComponentSM(addr, jid, secret, mode string) (c *conn, sm bool, early []*wire.Element, err error) {
	c, err = dialComponent(addr, jid, secret)
	if err != nil || mode == "off" {
		return c, false, nil, err
	}
	ok, early, err := c.enableSM(2*time.Second, false)
	if ok {
		return c, true, early, nil
	}
	if mode == "on" {
		c.nc.Close()
		if err == nil {
			err = errors.New("server refused <enable/>")
		}
		return nil, false, nil, fmt.Errorf("component stream management: %w", err)
	}
	if err == nil {
		// <failed/>: the stream is still good.
		return c, false, early, nil
	}
	c.nc.Close()
	c, err = dialComponent(addr, jid, secret)
	return c, false, nil, err
}
