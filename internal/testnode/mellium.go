package testnode

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/xml"
	"net"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
)

// DefaultExpectTimeout is how long MelliumClient.Expect waits unless the
// client's Timeout says otherwise: generous, for the race detector on two
// busy cores.
const DefaultExpectTimeout = 10 * time.Second

// MelliumClient is a c2s session of mellium.im/xmpp, an XMPP library this
// module did not write, so the server is tested from the other side as a
// stranger's client would use it: STARTTLS (any certificate), one SASL
// mechanism, a bound resource. The top-level elements it receives are
// queued in In as XML strings (dropped when 1,000 wait unread).
type MelliumClient struct {
	t       testing.TB
	JID     string // bound full JID
	Session *xmpp.Session
	// In receives every incoming top-level element.
	In chan string
	// Done receives the session's end (Serve's error) once.
	Done chan error
	// Timeout bounds Expect; 0 is DefaultExpectTimeout.
	Timeout time.Duration
}

// DialMellium connects full (a full JID: the resource is asked for) with
// pass over mech to the STARTTLS listener at addr. The session is closed
// and its reader goroutine waited for at the test's cleanup.
func DialMellium(t testing.TB, addr, full, pass string, mech sasl.Mechanism) (*MelliumClient, error) {
	t.Helper()
	j, err := jid.Parse(full)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // a failure shows in the negotiation
	s, err := xmpp.NewClientSession(ctx, j, conn,
		xmpp.StartTLS(&tls.Config{ServerName: j.Domain().String(), InsecureSkipVerify: true}), //nolint:gosec // self-signed test nodes
		xmpp.SASL("", pass, mech),
		xmpp.BindResource(),
	)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{}) // as above
	c := &MelliumClient{t: t, JID: s.LocalAddr().String(), Session: s, In: make(chan string, 1000), Done: make(chan error, 1)}
	served := make(chan struct{})
	go func() { // owned by the client: ends when the session does, which the cleanup ensures
		defer close(served)
		c.Done <- s.Serve(xmpp.HandlerFunc(c.queue))
	}()
	t.Cleanup(func() {
		s.Close()
		conn.Close()
		<-served
	})
	return c, nil
}

// queue copies one incoming element into In.
func (c *MelliumClient) queue(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
	var buf bytes.Buffer
	e := xml.NewEncoder(&buf)
	if _, err := xmlstream.Copy(e, xmlstream.MultiReader(xmlstream.Token(*start), r)); err != nil {
		return nil // an element cut by the stream's end: the session reports the end
	}
	_ = e.Flush() // into a bytes.Buffer: cannot fail
	select {
	case c.In <- buf.String():
	default:
	}
	return nil
}

// Send sends raw (one or more top-level elements); it fails the test on
// error.
func (c *MelliumClient) Send(raw string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Session.Send(ctx, xml.NewDecoder(strings.NewReader(raw))); err != nil {
		c.t.Fatalf("send %s: %v", raw, err)
	}
}

// Expect waits for an element containing every substring in want, skipping
// others, and returns it; it fails the test after Timeout.
func (c *MelliumClient) Expect(want ...string) string {
	c.t.Helper()
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultExpectTimeout
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case got := <-c.In:
			if containsAll(got, want) {
				return got
			}
		case <-deadline.C:
			c.t.Fatalf("%s: no element with %q within %v", c.JID, want, timeout)
			return ""
		}
	}
}

// ExpectNone checks that no element containing want arrives within d.
func (c *MelliumClient) ExpectNone(d time.Duration, want string) {
	c.t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		select {
		case got := <-c.In:
			if strings.Contains(got, want) {
				c.t.Fatalf("%s: unexpected %s", c.JID, got)
			}
		case <-deadline.C:
			return
		}
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
