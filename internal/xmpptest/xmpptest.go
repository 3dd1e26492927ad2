// Package xmpptest is a small raw XMPP client for tests: c2s and XEP-0114
// components, both with XEP-0198 counters. Negotiation (STARTTLS, SASL,
// resource binding, the component handshake, stream errors) is the one
// client stack of internal/xmppc, which the reporter and processor SDKs
// and loadgen use too; this package adds what tests need on top: a reader
// goroutine per connection that queues elements (so a timeout in Next never
// corrupts the stream), automatic answers to <r/> and pings, XEP-0198
// resumption, and helpers that fail the test.
//
// Read first: DialC2S, DialComponent, Conn.
package xmpptest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmppc"
)

// DefaultTimeout bounds each step of a dial.
const DefaultTimeout = 10 * time.Second

// StreamError is returned when the peer closed the stream with a
// <stream:error/>; Condition is its RFC 6120 condition and Raw the whole
// element.
type StreamError = xmppc.StreamError

// ErrClosed is returned by Next after the stream ended without an error.
var ErrClosed = errors.New("xmpptest: stream closed")

// Conn is one client or component connection. Send is safe for concurrent
// use; Next and Expect must be called from one goroutine at a time.
// XEP-0198 elements (<r/>, <a/>) are consumed by the reader: <r/> is
// answered with the count of stanzas received when AutoAck is on (the
// default), <a/> updates Acked. On a component connection XEP-0199 pings
// are answered and consumed while AutoPong is on (the default there).
type Conn struct {
	nc  net.Conn
	ns  string // content namespace
	JID string // bound full JID (c2s) or component JID
	// SMID is the XEP-0198 id from <enabled/> (or the resumed one);
	// ResumedH is the server's h from <resumed/>.
	SMID     string
	ResumedH uint32

	wmu sync.Mutex

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []*wire.Element
	err      error // reader's final error
	smOn     bool
	received uint32 // stanzas received since <enabled/>
	acked    uint32 // last <a h/> from the peer
	ackedAny bool
	autoAck  bool
	autoPong bool
	rSeen    int // <r/> from the peer not auto-answered
	done     chan struct{}
}

func newConn(nc net.Conn, ns string) *Conn {
	c := &Conn{nc: nc, ns: ns, autoAck: true, done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// C2SOptions configure DialC2S.
type C2SOptions struct {
	// StartTLS negotiates STARTTLS; TLS is its config (nil: skip
	// verification).
	StartTLS bool
	TLS      *tls.Config
	// Mechanism is "SCRAM-SHA-256" (default), "SCRAM-SHA-1" or "PLAIN".
	Mechanism string
	// Resource to bind; "" lets the server pick.
	Resource string
	// Resume, when set, resumes an XEP-0198 session (<resume/>) instead of
	// binding; a <failed/> answer is returned as a *ResumeFailed error.
	Resume *Resume
}

// Resume names the XEP-0198 session to resume and the client's h.
type Resume struct {
	PrevID string
	H      uint32
}

// ResumeFailed is the server's <failed/> answer to <resume/>; H is set when
// the server said how many stanzas it had handled.
type ResumeFailed struct {
	H    uint32
	HSet bool
	Raw  string
}

func (e *ResumeFailed) Error() string { return "resume failed: " + e.Raw }

// DialC2S connects user@domain to the c2s listener at addr, authenticates
// and binds a resource. It fails the test on error.
func DialC2S(t testing.TB, addr, domain, user, pass string, opts C2SOptions) *Conn {
	t.Helper()
	c, err := TryDialC2S(addr, domain, user, pass, opts)
	if err != nil {
		t.Fatalf("xmpptest: dial c2s %s@%s: %v", user, domain, err)
	}
	t.Cleanup(c.Close)
	return c
}

// TryDialC2S is DialC2S returning the error instead of failing the test.
// The caller must Close the connection.
func TryDialC2S(addr, domain, user, pass string, opts C2SOptions) (*Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*DefaultTimeout)
	defer cancel()
	nc, err := xmppc.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	tlsConfig := opts.TLS
	if tlsConfig == nil {
		tlsConfig = &tls.Config{InsecureSkipVerify: true, ServerName: domain} //nolint:gosec // tests only
	}
	x, _, err := xmppc.OpenC2S(ctx, nc, xmppc.C2SConfig{
		Domain: domain, Username: user, Password: pass,
		TLS: tlsConfig, SkipTLS: !opts.StartTLS,
		Mechanism: mechanismOrDefault(opts.Mechanism), Timeout: DefaultTimeout,
	})
	if err != nil {
		return nil, err // OpenC2S closed nc
	}
	c, err := bindOrResume(ctx, x, opts)
	if err != nil {
		x.Close()
		return nil, err
	}
	return c, nil
}

// mechanismOrDefault keeps this package's default, SCRAM-SHA-256, even
// when the server offers only weaker mechanisms: a test that wants another
// names it.
func mechanismOrDefault(m string) string {
	if m == "" {
		return "SCRAM-SHA-256"
	}
	return m
}

// bindOrResume binds a resource on the authenticated stream x, or resumes
// opts.Resume, and starts the reader goroutine.
func bindOrResume(ctx context.Context, x *xmppc.Conn, opts C2SOptions) (*Conn, error) {
	if opts.Resume != nil {
		return resume(ctx, x, opts.Resume)
	}
	jid, err := x.Bind(ctx, opts.Resource)
	if err != nil {
		return nil, err
	}
	if err := x.ClearDeadlines(); err != nil {
		return nil, err
	}
	c := newConn(x.NetConn(), wire.NSClient)
	c.JID = jid
	go c.readLoop(x.Dec)
	return c, nil
}

// resume sends <resume/> and turns the stream into a Conn whose SM
// counters continue: ResumedH is the server's h.
func resume(ctx context.Context, x *xmppc.Conn, r *Resume) (*Conn, error) {
	el, err := x.Step(ctx, fmt.Appendf(nil, "<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%d'/>", wire.Escape(r.PrevID), r.H))
	if err != nil {
		return nil, err
	}
	if el.Name.Space != wire.NSSM || el.Name.Local != "resumed" {
		f := &ResumeFailed{Raw: string(el.Raw)}
		if h, err := strconv.ParseUint(el.Get("h"), 10, 32); err == nil {
			f.H, f.HSet = uint32(h), true
		}
		return nil, f
	}
	h, err := strconv.ParseUint(el.Get("h"), 10, 32)
	if err != nil {
		return nil, fmt.Errorf("resumed without h: %s", el.Raw)
	}
	if err := x.ClearDeadlines(); err != nil {
		return nil, err
	}
	c := newConn(x.NetConn(), wire.NSClient)
	c.smOn = true
	c.received = r.H // our count goes on from what we told the server
	c.SMID = r.PrevID
	c.ResumedH = uint32(h)
	go c.readLoop(x.Dec)
	return c, nil
}

// DialComponent connects the component jid to the XEP-0114 listener at
// addr and completes the handshake. It fails the test on error.
func DialComponent(t testing.TB, addr, jid, secret string) *Conn {
	t.Helper()
	c, err := TryDialComponent(addr, jid, secret)
	if err != nil {
		t.Fatalf("xmpptest: dial component %s: %v", jid, err)
	}
	t.Cleanup(c.Close)
	return c
}

// TryDialComponent is DialComponent returning the error (a *StreamError
// when the server refused the stream). The caller must Close the
// connection.
func TryDialComponent(addr, jid, secret string) (*Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*DefaultTimeout)
	defer cancel()
	nc, err := xmppc.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return openComponent(ctx, nc, jid, secret)
}

// TryDialComponentTLS is TryDialComponent over direct TLS (the
// component_tls listener).
func TryDialComponentTLS(addr, jid, secret string, cfg *tls.Config) (*Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*DefaultTimeout)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: DefaultTimeout}, Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return openComponent(ctx, nc, jid, secret)
}

// openComponent runs the XEP-0114 handshake on nc and starts the reader
// goroutine; on error nc is closed.
func openComponent(ctx context.Context, nc net.Conn, jid, secret string) (*Conn, error) {
	x, err := xmppc.OpenComponent(ctx, nc, jid, secret, DefaultTimeout)
	if err != nil {
		return nil, err // OpenComponent closed nc
	}
	if err := x.ClearDeadlines(); err != nil {
		x.Close()
		return nil, err
	}
	c := newConn(x.NetConn(), wire.NSComponent)
	c.JID = jid
	c.autoPong = true
	go c.readLoop(x.Dec)
	return c, nil
}

// readLoop reads elements until the stream ends and queues them for Next.
func (c *Conn) readLoop(dec *wire.Decoder) {
	defer close(c.done)
	for {
		el, err := dec.Next()
		if err != nil {
			if errors.Is(err, wire.ErrStreamEnd) {
				err = ErrClosed
			}
			c.mu.Lock()
			if c.err == nil {
				c.err = err
			}
			c.cond.Broadcast()
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		switch {
		case el.Name.Space == wire.NSStream && el.Name.Local == "error":
			c.err = xmppc.ParseStreamError(el)
		case el.Name.Space == wire.NSSM && el.Name.Local == "r":
			if c.autoAck {
				h := c.received
				c.mu.Unlock()
				_ = c.Send(string(wire.Ack(h))) // a failed write shows as a read error
				c.mu.Lock()
			} else {
				c.rSeen++
			}
		case c.autoPong && isPing(el):
			if c.smOn {
				c.received++
			}
			reply := "<iq type='result' id='" + wire.Escape(el.Get("id")) + "' from='" + wire.Escape(el.Get("to")) + "' to='" + wire.Escape(el.Get("from")) + "'/>"
			c.mu.Unlock()
			_ = c.Send(reply) // a failed write shows as a read error
			c.mu.Lock()
		case el.Name.Space == wire.NSSM && el.Name.Local == "a":
			if h, err := strconv.ParseUint(el.Get("h"), 10, 32); err == nil {
				c.acked, c.ackedAny = uint32(h), true
			}
		default:
			if el.Name.Space == wire.NSSM && el.Name.Local == "enabled" {
				c.smOn = true
				c.SMID = el.Get("id")
			}
			if c.smOn && el.Name.Space == c.ns && isStanza(el.Name.Local) {
				c.received++
			}
			c.queue = append(c.queue, el)
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

func isStanza(name string) bool { return name == "message" || name == "presence" || name == "iq" }

// isPing reports whether el is an XEP-0199 ping request.
func isPing(el *wire.Element) bool {
	return el.Name.Local == "iq" && el.Get("type") == "get" && strings.Contains(string(el.Raw), "urn:xmpp:ping")
}

// Send writes raw XML. Safe for concurrent use.
func (c *Conn) Send(s string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.nc.SetWriteDeadline(time.Now().Add(DefaultTimeout)); err != nil {
		return err
	}
	_, err := io.WriteString(c.nc, s)
	return err
}

// wait waits under c.mu until cond() or timeout; false on timeout.
func (c *Conn) wait(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer t.Stop()
	for !cond() {
		if !time.Now().Before(deadline) {
			return false
		}
		c.cond.Wait()
	}
	return true
}

// Next returns the next element (stanza or nonza other than <r/>/<a/>),
// or an error: a *StreamError, ErrClosed, a read error, or a timeout.
func (c *Conn) Next(timeout time.Duration) (*wire.Element, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wait(timeout, func() bool { return len(c.queue) > 0 || c.err != nil })
	if len(c.queue) > 0 {
		el := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		return el, nil
	}
	if c.err != nil {
		return nil, c.err
	}
	return nil, fmt.Errorf("xmpptest: no element within %s", timeout)
}

// Expect skips elements until pred matches one and returns it; it fails
// the test on timeout or stream end.
func (c *Conn) Expect(t testing.TB, timeout time.Duration, pred func(*wire.Element) bool) *wire.Element {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		el, err := c.Next(max(left, time.Millisecond))
		if err != nil {
			t.Fatalf("xmpptest: %s: expected element not seen: %v", c.JID, err)
		}
		if pred(el) {
			return el
		}
	}
}

// Err returns the error that ended the stream (a *StreamError when the
// peer sent one), waiting up to timeout for the stream to end.
func (c *Conn) Err(timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wait(timeout, func() bool { return c.err != nil })
	return c.err
}

// EnableSM sends <enable/> and waits for <enabled/>.
func (c *Conn) EnableSM(resume bool) error {
	s := "<enable xmlns='urn:xmpp:sm:3'/>"
	if resume {
		s = "<enable xmlns='urn:xmpp:sm:3' resume='true'/>"
	}
	if err := c.Send(s); err != nil {
		return err
	}
	deadline := time.Now().Add(DefaultTimeout)
	el, err := c.Next(max(time.Until(deadline), time.Millisecond))
	if err != nil {
		return err
	}
	if el.Name.Space == wire.NSSM {
		if el.Name.Local == "enabled" {
			return nil
		}
		return fmt.Errorf("enable: %s", el.Raw)
	}
	// a stanza that raced the enable: keep it for Next
	c.mu.Lock()
	c.queue = append([]*wire.Element{el}, c.queue...)
	c.mu.Unlock()
	return c.waitEnabled(deadline)
}

func (c *Conn) waitEnabled(deadline time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.wait(time.Until(deadline), func() bool { return c.smOn || c.err != nil }) || !c.smOn {
		return fmt.Errorf("enable: no <enabled/>: %v", c.err)
	}
	for i, el := range c.queue {
		if el.Name.Space == wire.NSSM && el.Name.Local == "enabled" {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			break
		}
	}
	return nil
}

// SetAutoPong turns automatic answers to XEP-0199 pings on or off. It is on
// for components (a node confirms delivery to a component without XEP-0198
// by pinging it) and off for c2s connections; answered pings are not
// queued for Next.
func (c *Conn) SetAutoPong(on bool) {
	c.mu.Lock()
	c.autoPong = on
	c.mu.Unlock()
}

// SetAutoAck turns automatic answers to the peer's <r/> on or off.
func (c *Conn) SetAutoAck(on bool) {
	c.mu.Lock()
	c.autoAck = on
	c.mu.Unlock()
}

// Received returns how many stanzas arrived since <enabled/>.
func (c *Conn) Received() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.received
}

// Ack sends <a h='h'/>.
func (c *Conn) Ack(h uint32) error { return c.Send(string(wire.Ack(h))) }

// RequestAck sends <r/>.
func (c *Conn) RequestAck() error { return c.Send("<r xmlns='urn:xmpp:sm:3'/>") }

// Acked returns the last h the peer acknowledged and whether any <a/> came.
func (c *Conn) Acked() (uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked, c.ackedAny
}

// WaitAck waits until the peer's <a h/> reaches h.
func (c *Conn) WaitAck(h uint32, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	ok := c.wait(timeout, func() bool { return (c.ackedAny && int32(c.acked-h) >= 0) || c.err != nil })
	if ok && c.ackedAny && int32(c.acked-h) >= 0 {
		return nil
	}
	return fmt.Errorf("xmpptest: %s: ack h=%d not reached (last %d): %v", c.JID, h, c.acked, c.err)
}

// Close ends the stream politely and closes the connection. Safe to call
// twice.
func (c *Conn) Close() {
	_ = c.Send("</stream:stream>") // the peer may be gone
	c.nc.Close()
	<-c.done
}

// Drop closes the TCP connection without ending the stream (a crash).
func (c *Conn) Drop() {
	c.nc.Close()
	<-c.done
}
