package processor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

func connectReporter(t *testing.T, n *testnode.Node, user string) *reporter.Reporter {
	t.Helper()
	r, err := reporter.New(reporter.Config{Addr: n.C2S, JID: user + "@" + testnode.Domain, Password: testnode.Password,
		InsecureSkipVerify: true, Logger: zerolog.New(zerolog.NewTestWriter(t)).With().Str("side", "reporter").Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if err := r.Connect(ctxT(t, waitLong)); err != nil {
		t.Fatal(err)
	}
	return r
}

// run runs p until the test ends and fails the test if Run errs.
func run(t *testing.T, p *processor.Processor) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLong):
			t.Errorf("Run did not return after cancel")
		}
	})
}

func newProcessor(t *testing.T, n *testnode.Node, h processor.Handler, mod func(*processor.Config)) *processor.Processor {
	t.Helper()
	cfg := processor.Config{Addr: n.Comp, JID: testnode.Component, Secret: testnode.Secret, Handler: h,
		Logger:     zerolog.New(zerolog.NewTestWriter(t)).With().Str("side", "processor").Logger(),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	p, err := processor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// callLog records handler calls.
type callLog struct {
	mu    sync.Mutex
	calls []string // id per call, failed ones included
}

func (l *callLog) add(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, id)
	n := 0
	for _, c := range l.calls {
		if c == id {
			n++
		}
	}
	return n
}

func (l *callLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.calls...)
}

func TestHandlerErrorRedelivers(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{Users: []string{"dev1"}})
	r := connectReporter(t, n, "dev1")
	var ids []string
	for i := range 3 {
		id, err := r.Report(ctxT(t, waitLong), testnode.Component, fmt.Appendf(nil, "<m n='%d'/>", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	l := &callLog{}
	var okMu sync.Mutex
	var handled []string
	p := newProcessor(t, n, func(_ context.Context, rep processor.Report) error {
		if l.add(rep.ID) == 1 && rep.ID == ids[1] {
			return errors.New("database down") // the first try of the second report fails
		}
		okMu.Lock()
		handled = append(handled, rep.ID)
		okMu.Unlock()
		return nil
	}, nil)
	run(t, p)
	testutil.WaitFor(t, waitLong, "all 3 reports handled", func() bool {
		okMu.Lock()
		defer okMu.Unlock()
		return len(handled) >= 3
	})
	// Send one more: it marks the end, so a stray redelivery of the first
	// (acked) report would have shown up before it.
	last, err := r.Report(ctxT(t, waitLong), testnode.Component, []byte("<m n='last'/>"))
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitLong, "the last report", func() bool {
		okMu.Lock()
		defer okMu.Unlock()
		return handled[len(handled)-1] == last
	})
	want := strings.Join([]string{ids[0], ids[1], ids[1], ids[2], last}, ",")
	if got := strings.Join(l.get(), ","); got != want {
		t.Fatalf("handler calls:\n got %s\nwant %s (the failed report again, the acked one not)", got, want)
	}
}

func TestPanicIsAnError(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{Users: []string{"dev1"}})
	r := connectReporter(t, n, "dev1")
	id, err := r.Report(ctxT(t, waitLong), testnode.Component, []byte("<m/>"))
	if err != nil {
		t.Fatal(err)
	}
	l := &callLog{}
	done := make(chan struct{})
	p := newProcessor(t, n, func(_ context.Context, rep processor.Report) error {
		if l.add(rep.ID) == 1 {
			panic("boom")
		}
		close(done)
		return nil
	}, nil)
	run(t, p)
	select {
	case <-done:
	case <-time.After(waitLong):
		t.Fatal("not redelivered after a panic")
	}
	if got := l.get(); len(got) != 2 || got[0] != id || got[1] != id {
		t.Fatalf("calls %v", got)
	}
}

func TestOrderAndAckAcrossRestart(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{Users: []string{"dev1"}})
	r := connectReporter(t, n, "dev1")
	const total = 50
	var ids []string
	for i := range total {
		id, err := r.Report(ctxT(t, waitLong), testnode.Component, fmt.Appendf(nil, "<m n='%d'/>", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// First processor handles everything, then stops cleanly: its acks
	// must reach the node, so a second processor gets nothing again.
	l1 := &callLog{}
	p1 := newProcessor(t, n, func(_ context.Context, rep processor.Report) error { l1.add(rep.ID); return nil }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p1.Run(ctx) }()
	testutil.WaitFor(t, waitLong, "all reports at the first processor", func() bool { return len(l1.get()) >= total })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitLong):
		t.Fatal("Run did not return")
	}
	if got := strings.Join(l1.get(), ","); got != strings.Join(ids, ",") {
		t.Fatalf("order:\n got %s\nwant %s", got, strings.Join(ids, ","))
	}
	l2 := &callLog{}
	p2 := newProcessor(t, n, func(_ context.Context, rep processor.Report) error { l2.add(rep.ID); return nil }, nil)
	run(t, p2)
	last, err := r.Report(ctxT(t, waitLong), testnode.Component, []byte("<m n='last'/>"))
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitLong, "the last report at the second processor", func() bool {
		got := l2.get()
		return len(got) > 0 && got[len(got)-1] == last
	})
	if got := l2.get(); len(got) != 1 {
		t.Fatalf("second processor got %d stanzas (%v), want only the new one", len(got), got)
	}
}

func TestWrongSecret(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{})
	p := newProcessor(t, n, func(context.Context, processor.Report) error { return nil },
		func(c *processor.Config) { c.Secret = "nope" })
	err := p.Run(ctxT(t, waitLong))
	var se *processor.StreamError
	if !errors.As(err, &se) || se.Condition != "not-authorized" {
		t.Fatalf("Run with a wrong secret: %v", err)
	}
}

func TestSendNeedsTo(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{})
	p := newProcessor(t, n, func(context.Context, processor.Report) error { return nil }, nil)
	if err := p.Send(ctxT(t, time.Second), "<message><body>x</body></message>"); err == nil {
		t.Fatal("a stanza without 'to' was accepted")
	}
}

// lateEnable delays the write that carries <enable/>, so that the node
// starts delivering before XEP-0198 is on (its 500 ms grace has passed):
// those rows are confirmed by the node's XEP-0199 ping, not by an ack.
type lateEnable struct{ net.Conn }

func (c lateEnable) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("<enable")) {
		time.Sleep(time.Second)
	}
	return c.Conn.Write(b)
}

// TestPingBeforeEnableAnswered: the SDK answers the node's pings itself;
// the Handler sees only the reports, and the node, its ping answered,
// does not close the stream and deliver them again.
func TestPingBeforeEnableAnswered(t *testing.T) {
	n := testnode.Start(t, bin, testnode.Options{Users: []string{"dev1"}})
	r := connectReporter(t, n, "dev1")
	const total = 3
	for i := range total {
		if _, err := r.Report(ctxT(t, waitLong), testnode.Component, fmt.Appendf(nil, "<m n='%d'/>", i)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got []processor.Report
	p := newProcessor(t, n, func(_ context.Context, rep processor.Report) error {
		mu.Lock()
		got = append(got, rep)
		mu.Unlock()
		return nil
	}, func(c *processor.Config) {
		c.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return lateEnable{nc}, nil
		}
	})
	run(t, p)
	testutil.WaitFor(t, waitLong, "the reports", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= total
	})
	time.Sleep(500 * time.Millisecond) // anything else the node sends in the meantime
	mu.Lock()
	defer mu.Unlock()
	for _, rep := range got {
		if rep.Name != "message" {
			t.Fatalf("the Handler got %s %s from %s: %s", rep.Name, rep.Type, rep.From, rep.Stanza)
		}
	}
	if len(got) != total {
		t.Fatalf("the Handler got %d reports, want %d", len(got), total)
	}
}
