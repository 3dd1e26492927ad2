package component_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmpptest"
)

// rawComponent completes the XEP-0114 handshake on a bare socket and then
// reads nothing more: the laziest processor there is (a stopped process
// looks the same from the node). Close it to kill it.
func rawComponent(t *testing.T, addr, jid string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if err := nc.SetDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(nc, "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='%s'>", jid); err != nil {
		t.Fatal(err)
	}
	dec := wire.NewDecoder(bufio.NewReaderSize(nc, 512), 0)
	h, err := dec.Header()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum([]byte(h.ID + secret))
	if _, err := fmt.Fprintf(nc, "<handshake>%s</handshake>", hex.EncodeToString(sum[:])); err != nil {
		t.Fatal(err)
	}
	el, err := dec.Next()
	if err != nil || el.Name.Local != "handshake" {
		t.Fatalf("handshake: %v %v", el, err)
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	return nc
}

// dialReplacement connects a component, retrying while the node still
// refuses it (conflict: the old connection is not gone yet).
func dialReplacement(t *testing.T, e *env, within time.Duration) *xmpptest.Conn {
	t.Helper()
	var c *xmpptest.Conn
	var last error
	deadline := time.Now().Add(within)
	for c == nil {
		c, last = xmpptest.TryDialComponent(e.comp, compA, secret)
		if c == nil && time.Now().After(deadline) {
			t.Fatalf("no replacement connection within %s: %v", within, last)
		}
		if c == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Cleanup(c.Close)
	return c
}

// recvAll reads until every report of senders × per arrived at least once
// and checks each sender's order (a report read before may repeat only
// before the first new one: at-least-once, FIFO per sender).
func recvAll(t *testing.T, c *xmpptest.Conn, senders []string, per int) int {
	t.Helper()
	var r recv
	seen := map[string]bool{}
	for len(seen) < len(senders)*per {
		el, err := c.Next(wait)
		if err != nil {
			t.Fatalf("after %d distinct reports: %v", len(seen), err)
		}
		if r.add(t, el) {
			seen[el.Get("id")] = true
		}
	}
	for u, seqs := range r.seqs {
		for i := 1; i < len(seqs); i++ {
			if seqs[i] != seqs[i-1]+1 {
				t.Fatalf("%s: order broken: %v", u, seqs[max(0, i-3):i+1])
			}
		}
	}
	return r.total
}

func loginSenders(t *testing.T, e *env, names ...string) map[string]*xmpptest.Conn {
	t.Helper()
	conns := map[string]*xmpptest.Conn{}
	for _, u := range names {
		e.user(u)
		c := e.login(u, "r")
		if err := c.EnableSM(false); err != nil {
			t.Fatal(err)
		}
		conns[u] = c
	}
	return conns
}

// TestPlainComponentKilledLosesNothing: a plain XEP-0114 processor (no
// XEP-0198) stops reading with 5,000 acknowledged reports in flight and is
// killed; the next one gets all 5,000, in order per sender.
func TestPlainComponentKilledLosesNothing(t *testing.T) {
	const per = 1000
	senders := []string{"k1", "k2", "k3", "k4", "k5"}
	e := startEnv(t, envOpts{quiet: true, cfg: func(c *component.Config) { c.MaxInFlight = 5 * per }})
	sendReports(t, loginSenders(t, e, senders...), per) // acked: durable

	lazy := rawComponent(t, e.comp, compA)
	// Let the node write what it can into the socket buffers.
	testutil.WaitFor(t, wait, "rows claimed by the lazy processor", func() bool {
		st, err := e.store.Queue().Stats(context.Background(), compA)
		return err == nil && len(st) == 1 && st[0].Leased > 0
	})
	time.Sleep(time.Second)
	lazy.Close() // killed without reading

	next := dialReplacement(t, e, wait)
	n := recvAll(t, next, senders, per)
	t.Logf("next processor got %d reports (%d distinct)", n, len(senders)*per)
	testutil.WaitFor(t, wait, "queue drained after the pings were answered", func() bool {
		st, err := e.store.Queue().Stats(context.Background(), compA)
		return err == nil && len(st) == 1 && st[0].Rows == 0
	})
}

// TestPingErrorConfirmsAndSilenceCloses: a processor that answers the
// node's ping with an error has read everything before it (rows are
// deleted); one that reads but never answers is closed with
// connection-timeout after ping_timeout, and its rows go to the next.
func TestPingErrorConfirmsAndSilenceCloses(t *testing.T) {
	const per = 50
	e := startEnv(t, envOpts{quiet: true, cfg: func(c *component.Config) {
		c.IdleTimeout = time.Hour
		c.PingTimeout = 500 * time.Millisecond
	}})
	senders := []string{"p1"}
	conns := loginSenders(t, e, senders...)
	sendReports(t, conns, per)

	mute := e.component(compA)
	mute.SetAutoPong(false)
	start := time.Now()
	for range per {
		mute.Expect(t, wait, isMessage)
	}
	if err := mute.Err(wait); !strings.Contains(fmt.Sprint(err), "connection-timeout") {
		t.Fatalf("silent processor: stream ended with %v, want connection-timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("silent processor closed after %s; want about ping_timeout", d)
	}

	erring := dialReplacement(t, e, wait)
	erring.SetAutoPong(false)
	got := 0
	for got < per {
		el := erring.Expect(t, wait, func(el *wire.Element) bool { return isMessage(el) || el.Name.Local == "iq" })
		if el.Name.Local == "iq" {
			if el.Get("type") != "get" || !strings.Contains(string(el.Raw), "urn:xmpp:ping") {
				t.Fatalf("unexpected iq %s", el.Raw)
			}
			if err := erring.Send(fmt.Sprintf("<iq type='error' id='%s' from='%s' to='%s'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
				el.Get("id"), compA, el.Get("from"))); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got++
	}
	el := erring.Expect(t, wait, func(el *wire.Element) bool { return el.Name.Local == "iq" })
	if err := erring.Send(fmt.Sprintf("<iq type='error' id='%s' from='%s' to='%s'><error type='cancel'><feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
		el.Get("id"), compA, el.Get("from"))); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, wait, "rows deleted after an error answer", func() bool {
		st, err := e.store.Queue().Stats(context.Background(), compA)
		return err == nil && len(st) == 1 && st[0].Rows == 0
	})
}

// TestHungComponentReplaced: a processor that keeps its connection but
// never reads (SIGSTOP looks the same) is probed as soon as a replacement
// is refused with conflict, closed after ping_timeout, and the replacement
// connects then and gets every report. The idle timeout is an hour here:
// nobody waits for it.
func TestHungComponentReplaced(t *testing.T) {
	const per = 200
	pingTimeout := 500 * time.Millisecond
	e := startEnv(t, envOpts{quiet: true, cfg: func(c *component.Config) {
		c.IdleTimeout = time.Hour
		c.PingTimeout = pingTimeout
	}})
	// Idle: nothing to deliver, the processor is silent. The first refused
	// replacement probes it; closing takes ping_timeout, plus at most the 2 s
	// the node gives its stream error to be written and a check tick.
	hung := rawComponent(t, e.comp, compA)
	defer hung.Close()
	start := time.Now()
	next := dialReplacement(t, e, pingTimeout+3*time.Second)
	took := time.Since(start)
	t.Logf("idle: replacement connected after %s", took.Round(time.Millisecond))
	if took < pingTimeout {
		t.Fatalf("replacement connected after %s, before ping_timeout: the hung connection was not the one probed and closed", took)
	}
	next.Close()

	// Busy: acknowledged reports written to a processor that stopped
	// reading; its unanswered ping closes it after ping_timeout.
	hung = rawComponent(t, e.comp, compA)
	defer hung.Close()
	senders := []string{"h1", "h2"}
	sendReports(t, loginSenders(t, e, senders...), per)
	start = time.Now()
	next = dialReplacement(t, e, pingTimeout+3*time.Second)
	t.Logf("busy: replacement connected after %s", time.Since(start).Round(time.Millisecond))
	recvAll(t, next, senders, per)
}

// TestIdleComponentProbed: a silent processor nobody tries to replace is
// pinged once idle and its stream closed after ping_timeout.
func TestIdleComponentProbed(t *testing.T) {
	idle, pingTimeout := 300*time.Millisecond, 500*time.Millisecond
	e := startEnv(t, envOpts{quiet: true, cfg: func(c *component.Config) {
		c.IdleTimeout = idle
		c.PingTimeout = pingTimeout
	}})
	silent := rawComponent(t, e.comp, compA)
	start := time.Now()
	if err := silent.SetReadDeadline(start.Add(idle + pingTimeout + 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// The test reads only to see the node's ping, stream error and close;
	// it never answers.
	got, err := io.ReadAll(silent)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("stream not closed within idle + ping_timeout + 5s: %v (read %q)", err, got)
	}
	if !strings.Contains(string(got), "urn:xmpp:ping") || !strings.Contains(string(got), "connection-timeout") {
		t.Fatalf("want a ping, then connection-timeout; got %q", got)
	}
	if took < idle+pingTimeout {
		t.Fatalf("closed after %s, before idle + ping_timeout", took)
	}
	t.Logf("silent processor closed after %s", took.Round(time.Millisecond))
}

// TestSilentSMComponentCloses: a processor with XEP-0198 that gets rows
// and never answers the node's <r/> (nor anything else) is closed after
// ping_timeout; its unacked rows go to the next connection.
func TestSilentSMComponentCloses(t *testing.T) {
	const per = 50
	e := startEnv(t, envOpts{quiet: true, cfg: func(c *component.Config) {
		c.IdleTimeout = time.Hour
		c.PingTimeout = 500 * time.Millisecond
	}})
	senders := []string{"s1"}
	sendReports(t, loginSenders(t, e, senders...), per)
	mute := e.component(compA)
	mute.SetAutoAck(false)
	if err := mute.EnableSM(false); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := mute.Err(wait); !strings.Contains(fmt.Sprint(err), "connection-timeout") {
		t.Fatalf("stream ended with %v, want connection-timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %s; want about ping_timeout", d)
	}
	recvAll(t, dialReplacement(t, e, wait), senders, per)
}
