package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmppc"
)

// stepTimeout bounds each negotiation step and each write.
const stepTimeout = 10 * time.Second

// conn is one XMPP connection (c2s or component) negotiated by the shared
// client stack (internal/xmppc) and then spoken with raw bytes: exactly one
// goroutine reads with next and any goroutine writes with write.
type conn struct {
	nc  net.Conn // TLS when negotiated
	dec *wire.Decoder
	wmu sync.Mutex
	bw  *bufio.Writer

	jid      string // bound full JID or component JID
	features string // stream features after authentication (raw)
	smOffer  bool   // the server offered urn:xmpp:sm:3 after auth
}

// newConn wraps the negotiated stream x.
func newConn(x *xmppc.Conn, jid string) *conn {
	return &conn{nc: x.NetConn(), dec: x.Dec, bw: bufio.NewWriterSize(x.NetConn(), 4096), jid: jid}
}

func (c *conn) rawWrite(s string) error { return c.write([]byte(s)) }

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
// *xmppc.StreamError.
func (c *conn) next() (*wire.Element, error) {
	el, err := c.dec.Next()
	if err != nil {
		return nil, err
	}
	if el.Name.Space == wire.NSStream && el.Name.Local == "error" {
		return nil, xmppc.ParseStreamError(el)
	}
	return el, nil
}

func (c *conn) close() {
	_ = c.write([]byte("</stream:stream>")) // the peer may be gone
	c.nc.Close()
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
	ctx, cancel := context.WithTimeout(context.Background(), 4*stepTimeout)
	defer cancel()
	nc, err := xmppc.Dial(ctx, o.addr)
	if err != nil {
		return nil, err
	}
	mech := o.mech
	if mech == "" {
		mech = "SCRAM-SHA-1"
	}
	x, feats, err := xmppc.OpenC2S(ctx, nc, xmppc.C2SConfig{
		Domain: o.domain, Username: o.user, Password: o.pass,
		InsecureSkipVerify: true, // benchmarks against self-signed certificates
		SkipTLS:            !o.startTLS, Mechanism: mech, Timeout: stepTimeout,
	})
	if err != nil {
		return nil, err // OpenC2S closed nc
	}
	c, err := bind(ctx, x, string(feats.Raw), o.resource)
	if err != nil {
		x.Close()
		return nil, err
	}
	return c, nil
}

// bind binds resource on the authenticated stream x whose features are
// features, and establishes an RFC 3921 session when the server (another
// server under comparison) still requires one.
func bind(ctx context.Context, x *xmppc.Conn, features, resource string) (*conn, error) {
	jid, err := x.Bind(ctx, resource)
	if err != nil {
		return nil, err
	}
	if strings.Contains(features, wire.NSSession) && !strings.Contains(features, "<optional") {
		if _, err := x.Step(ctx, []byte("<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")); err != nil {
			return nil, fmt.Errorf("session: %w", err)
		}
	}
	if err := x.ClearDeadlines(); err != nil {
		return nil, err
	}
	c := newConn(x, jid)
	c.features = features
	c.smOffer = strings.Contains(features, wire.NSSM)
	return c, nil
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
	ctx, cancel := context.WithTimeout(context.Background(), 4*stepTimeout)
	defer cancel()
	nc, err := xmppc.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	x, err := xmppc.OpenComponent(ctx, nc, jid, secret, stepTimeout)
	if err != nil {
		return nil, err // OpenComponent closed nc
	}
	if err := x.ClearDeadlines(); err != nil {
		x.Close()
		return nil, err
	}
	return newConn(x, jid), nil
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
