package reporter_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/clients/processor"
	"xcollect.dev/xcollect/clients/reporter"
	"xcollect.dev/xcollect/internal/testnode"
	"xcollect.dev/xcollect/internal/testutil"
)

const waitLong = 30 * time.Second

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newReporter(t *testing.T, n *testnode.Node, user string, mod func(*reporter.Config)) *reporter.Reporter {
	t.Helper()
	cfg := reporter.Config{
		Addr: n.C2S, JID: user + "@" + testnode.Domain, Password: testnode.Password,
		InsecureSkipVerify: true, Logger: zerolog.New(zerolog.NewTestWriter(t)).With().Str("side", "reporter").Logger(),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := reporter.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// sink is a processor that records what it handled.
type sink struct {
	mu   sync.Mutex
	seen []processor.Report
	fail func(processor.Report) error
}

func (s *sink) handle(_ context.Context, r processor.Report) error {
	if s.fail != nil {
		if err := s.fail(r); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.seen = append(s.seen, r)
	s.mu.Unlock()
	return nil
}

func (s *sink) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.seen))
	for i, r := range s.seen {
		out[i] = r.ID
	}
	return out
}

// startProcessor runs a processor until the test ends.
func startProcessor(t *testing.T, n *testnode.Node, s *sink) *processor.Processor {
	t.Helper()
	p, err := processor.New(processor.Config{Addr: n.Comp, JID: testnode.Component, Secret: testnode.Secret,
		Handler: s.handle, Logger: zerolog.New(zerolog.NewTestWriter(t)).With().Str("side", "processor").Logger(),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("processor Run: %v", err)
			}
		case <-time.After(waitLong):
			t.Errorf("processor Run did not return after cancel")
		}
	})
	return p
}

func TestReportAckedWhenDurableThenDelivered(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{Users: []string{"dev1"}})
	r := newReporter(t, n, "dev1", nil)
	if err := r.Connect(ctxT(t, waitLong)); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.JID(), "dev1@localhost/") {
		t.Fatalf("bound JID %q", r.JID())
	}
	// No processor is connected: an ack can only mean the queue has it.
	var ids []string
	for i := range 3 {
		id, err := r.Report(ctxT(t, waitLong), testnode.Component, fmt.Appendf(nil, "<temp xmlns='urn:example:t' seq='%d'>21.5</temp>", i))
		if err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
		ids = append(ids, id)
	}
	if p := r.Pending(); p != 0 {
		t.Fatalf("pending after acks = %d", p)
	}
	s := &sink{}
	startProcessor(t, n, s)
	testutil.WaitFor(t, waitLong, "3 reports at the processor", func() bool { return len(s.ids()) >= 3 })
	got := s.ids()
	if strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Fatalf("processor got ids %v, want %v in order", got, ids)
	}
	s.mu.Lock()
	first := s.seen[0]
	s.mu.Unlock()
	if !strings.HasPrefix(first.From, "dev1@localhost/") || string(first.Payload) != "<temp xmlns='urn:example:t' seq='0'>21.5</temp>" {
		t.Fatalf("report from %q payload %q", first.From, first.Payload)
	}
}

func TestWrongPassword(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{Users: []string{"dev1"}})
	r := newReporter(t, n, "dev1", func(c *reporter.Config) { c.Password = "wrong" })
	err := r.Connect(ctxT(t, waitLong))
	var ae *reporter.AuthError
	if !errors.As(err, &ae) || ae.Condition != "not-authorized" {
		t.Fatalf("Connect with a wrong password: %v, want an AuthError not-authorized", err)
	}
}

func TestRejectsBadPayload(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{Users: []string{"dev1"}})
	r := newReporter(t, n, "dev1", nil)
	for _, p := range []string{"", "text", "<a/><b/>", "<a>"} {
		if _, err := r.Report(ctxT(t, time.Second), testnode.Component, []byte(p)); err == nil {
			t.Errorf("payload %q accepted", p)
		}
	}
}

// dropper dials real connections and can cut the current one.
type dropper struct {
	mu    sync.Mutex
	conns []net.Conn
	dials int
}

func (d *dropper) dial(ctx context.Context, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.dials++
	d.mu.Unlock()
	return c, nil
}

func (d *dropper) drop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

func (d *dropper) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dials
}

func TestResumeAfterDroppedConnection(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{Users: []string{"dev1"}})
	d := &dropper{}
	r := newReporter(t, n, "dev1", func(c *reporter.Config) { c.Dial = d.dial })
	if err := r.Connect(ctxT(t, waitLong)); err != nil {
		t.Fatal(err)
	}
	jid := r.JID()
	want := map[string]bool{}
	id, err := r.Report(ctxT(t, waitLong), testnode.Component, []byte("<r n='0'/>"))
	if err != nil {
		t.Fatal(err)
	}
	want[id] = true

	// Cut the socket while reports are in flight, three times: every
	// Report still returns nil, and the processor sees each id exactly once.
	const rounds, inFlight = 3, 20
	for round := range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, inFlight)
		idc := make(chan string, inFlight)
		for i := range inFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id, err := r.Report(ctxT(t, waitLong), testnode.Component, fmt.Appendf(nil, "<r round='%d' n='%d'/>", round, i))
				if err != nil {
					errs <- err
					return
				}
				idc <- id
			}()
		}
		d.drop()
		wg.Wait()
		close(errs)
		close(idc)
		for err := range errs {
			t.Errorf("round %d: report during the drop: %v", round, err)
		}
		for id := range idc {
			want[id] = true
		}
	}
	if d.count() < 1+rounds {
		t.Fatalf("not every drop reconnected (dials %d)", d.count())
	}
	// The next report after the drop succeeds too.
	id, err = r.Report(ctxT(t, waitLong), testnode.Component, []byte("<r n='last'/>"))
	if err != nil {
		t.Fatal(err)
	}
	want[id] = true
	if r.JID() != jid {
		t.Errorf("full JID changed from %s to %s", jid, r.JID())
	}
	if !strings.Contains(n.Log(), "session resumed") {
		t.Errorf("the node did not log a resumption")
	}

	s := &sink{}
	startProcessor(t, n, s)
	testutil.WaitFor(t, waitLong, fmt.Sprintf("%d reports at the processor", len(want)), func() bool { return len(s.ids()) >= len(want) })
	// A duplicate would arrive right behind the originals; the last
	// report marks the end of the queue.
	testutil.WaitFor(t, waitLong, "the last report", func() bool {
		ids := s.ids()
		return len(ids) > 0 && ids[len(ids)-1] == id
	})
	seen := map[string]int{}
	for _, id := range s.ids() {
		seen[id]++
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("report %s delivered %d times", id, seen[id])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("processor got %d distinct reports, want %d", len(seen), len(want))
	}
}

func TestNewSessionWhenResumptionIsOff(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{Users: []string{"dev1"}, ResumeTimeout: "0s"})
	d := &dropper{}
	r := newReporter(t, n, "dev1", func(c *reporter.Config) { c.Dial = d.dial })
	if err := r.Connect(ctxT(t, waitLong)); err != nil {
		t.Fatal(err)
	}
	d.drop()
	if _, err := r.Report(ctxT(t, waitLong), testnode.Component, []byte("<r/>")); err != nil {
		t.Fatal(err)
	}
	if d.count() < 2 {
		t.Fatalf("no reconnect (dials %d)", d.count())
	}
}

// fakeRedirector answers every stream with see-other-host naming target.
func fakeRedirector(t *testing.T, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() { // owned by the test: ends when the listener closes
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // a stuck client fails the test by timeout
			buf := make([]byte, 4096)
			var got []byte
			for !bytes.Contains(got, []byte("version='1.0'>")) {
				k, err := c.Read(buf)
				if err != nil {
					break
				}
				got = append(got, buf[:k]...)
			}
			_, _ = io.WriteString(c, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='x' from='localhost' version='1.0'>"+
				"<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>"+target+"</see-other-host></stream:error></stream:stream>")
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestFollowsSeeOtherHost(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{Users: []string{"dev1"}})
	fake := fakeRedirector(t, n.C2S)
	r := newReporter(t, n, "dev1", func(c *reporter.Config) { c.Addr = fake })
	if err := r.Connect(ctxT(t, waitLong)); err != nil {
		t.Fatalf("Connect via a redirect: %v", err)
	}
	if _, err := r.Report(ctxT(t, waitLong), testnode.Component, []byte("<r/>")); err != nil {
		t.Fatal(err)
	}
}

func TestRedirectLoopFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self := ln.Addr().String()
	ln.Close()
	fake := fakeRedirector(t, self) // redirects to a port nobody listens on
	r, err := reporter.New(reporter.Config{Addr: fake, JID: "dev1@localhost", Password: "x", InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Connect(ctxT(t, waitLong)); err == nil {
		t.Fatal("Connect succeeded")
	}
}

func TestDownstreamMessageAndIQ(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{Users: []string{"dev1"}})
	r := newReporter(t, n, "dev1", nil)
	msgs := make(chan string, 4)
	r.OnMessage(func(from string, el []byte) { msgs <- from + " " + string(el) })
	if err := r.Connect(ctxT(t, waitLong)); err != nil {
		t.Fatal(err)
	}
	p := startProcessor(t, n, &sink{})
	ctx := ctxT(t, waitLong)
	// No IQ handler yet: service-unavailable.
	_, err := p.IQ(ctx, r.JID(), []byte("<cmd xmlns='urn:example:cmd'>reboot</cmd>"))
	var se *processor.StanzaError
	if !errors.As(err, &se) || se.Condition != "service-unavailable" {
		t.Fatalf("IQ without a handler: %v, want service-unavailable", err)
	}
	r.OnIQ(func(_ context.Context, req reporter.Request) ([]byte, error) {
		if req.From != testnode.Component || !strings.Contains(string(req.Payload), "reboot") {
			return nil, &reporter.StanzaError{Type: "modify", Condition: "bad-request"}
		}
		return []byte("<ok xmlns='urn:example:cmd'/>"), nil
	})
	res, err := p.IQ(ctx, r.JID(), []byte("<cmd xmlns='urn:example:cmd'>reboot</cmd>"))
	if err != nil || !strings.Contains(string(res), "<ok") {
		t.Fatalf("IQ: %q, %v", res, err)
	}
	if err := p.Message(ctx, r.JID(), "hello device"); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		if !strings.HasPrefix(m, testnode.Component+" ") || !strings.Contains(m, "hello device") {
			t.Fatalf("message %q", m)
		}
	case <-ctx.Done():
		t.Fatal("no message")
	}
	if err := r.SetPresence(ctx, "away", "in the field"); err != nil {
		t.Fatal(err)
	}
}

func TestCloseStopsAndRefuses(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{Users: []string{"dev1"}})
	r := newReporter(t, n, "dev1", nil)
	if err := r.Connect(ctxT(t, waitLong)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitLong):
		t.Fatal("Close hangs")
	}
	if _, err := r.Report(ctxT(t, time.Second), testnode.Component, []byte("<r/>")); !errors.Is(err, reporter.ErrClosed) {
		t.Fatalf("Report after Close: %v", err)
	}
}
