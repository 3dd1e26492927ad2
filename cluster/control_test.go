package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/testutil"
)

// TestControlMessages: control messages reach the peer's ControlHandler
// with their kind, body and sender, never its StanzaHandler; an acked one
// gets its receipt once the handler acks, and fails when the link dies
// first.
func TestControlMessages(t *testing.T) {
	ns := startCluster(t, 2, nil)
	a, b := ns[0], ns[1]
	if err := a.SendControl("n1", 3, []byte(`{"plain":true}`)); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 2)
	if err := a.SendControlAcked("n1", 4, []byte(`{"acked":true}`), func(err error) { got <- err }); err != nil {
		t.Fatal(err)
	}
	wantReceipt(t, got)
	testutil.WaitFor(t, 5*time.Second, "both control messages at the peer", func() bool { return len(b.h.controlList()) == 2 })
	want := []controlMsg{{"n0", 3, []byte(`{"plain":true}`)}, {"n0", 4, []byte(`{"acked":true}`)}}
	for i, m := range b.h.controlList() {
		if m.from != want[i].from || m.kind != want[i].kind || !bytes.Equal(m.msg, want[i].msg) {
			t.Fatalf("control message %d = %+v, want %+v", i, m, want[i])
		}
	}
	b.h.mu.Lock()
	stanzas := len(b.h.stanzas)
	b.h.mu.Unlock()
	if stanzas != 0 {
		t.Fatalf("control messages reached the stanza handler: %d", stanzas)
	}
	// Never acked by the peer; its node goes away: the receipt fails.
	if err := a.SendControlAcked("n1", kindNoAck, []byte("x"), func(err error) { got <- err }); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the unacked message at the peer", func() bool { return len(b.h.controlList()) == 3 })
	wantReceiptFailsWhenPeerStops(t, b, got)
	if err := a.SendControl("n7", 3, nil); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("to an unknown node: %v, want ErrUnknownNode", err)
	}
}

// TestControlFrameRoundTrip: control frames written by the link writer
// decode to their kind and body, and acked ones carry their sequence.
func TestControlFrameRoundTrip(t *testing.T) {
	l, c2 := pipeLink(t)
	if err := l.enqueue(outFrame{typ: frameControl, kind: 7, body: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	if err := l.enqueueAcked(outFrame{typ: frameControlAcked, kind: 8, body: []byte("acked")}, func(error) {}); err != nil {
		t.Fatal(err)
	}
	go l.writeLoop(func() []byte { return nil })
	defer l.close()
	r := bufio.NewReader(c2)
	typ, body, err := readFrame(r)
	if err != nil || typ != frameControl || body[0] != 7 || string(body[1:]) != "hello" {
		t.Fatalf("control frame: %v %q %v", typ, body, err)
	}
	typ, body, err = readFrame(r)
	if err != nil || typ != frameControlAcked {
		t.Fatalf("acked control frame: %v %v", typ, err)
	}
	rd := reader{b: body}
	seq, kind := rd.uvarint(), rd.byte()
	if rd.err != nil || seq != 1 || kind != 8 || string(rd.b) != "acked" {
		t.Fatalf("acked control frame: seq %d kind %d body %q err %v", seq, kind, rd.b, rd.err)
	}
}

// TestUndeliveredSkipsControlFrames: a link that dies reports only its
// stanzas as undelivered; control messages are the sender's to repeat.
func TestUndeliveredSkipsControlFrames(t *testing.T) {
	l, _ := pipeLink(t)
	if err := l.enqueue(outFrame{typ: frameControl, kind: 1, body: []byte("c")}); err != nil {
		t.Fatal(err)
	}
	if err := l.enqueue(outFrame{typ: frameStanza, to: "u@x", body: []byte("<m/>")}); err != nil {
		t.Fatal(err)
	}
	l.close()
	got := l.writeLoop(func() []byte { return nil })
	if len(got) != 1 || got[0].to != "u@x" {
		t.Fatalf("undelivered = %+v, want the stanza only", got)
	}
}

func TestNewRequiresEveryHandler(t *testing.T) {
	cfg := DefaultLocalConfig()
	cfg.NodeName = "a"
	cfg.SecretKey = testKey
	h := newRec()
	for _, hs := range []Handlers{{Directory: h, Control: h}, {Stanzas: h, Control: h}, {Stanzas: h, Directory: h}} {
		if _, err := New(cfg, hs); err == nil || !strings.Contains(err.Error(), "required") {
			t.Fatalf("New with %+v: %v", hs, err)
		}
	}
}

// wantReceiptFailsWhenPeerStops shuts peer down and expects the receipt
// waiting on got to fail with ErrLinkDown.
func wantReceiptFailsWhenPeerStops(t *testing.T, peer tnode, got <-chan error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := peer.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if !errors.Is(err, ErrLinkDown) {
			t.Fatalf("receipt after the link died: %v, want ErrLinkDown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("receipt never failed")
	}
}

// pipeLink returns a link over one end of a pipe, without its first
// snapshot, and the other end.
func pipeLink(t *testing.T) (*link, net.Conn) {
	t.Helper()
	c1, c2 := net.Pipe()
	t.Cleanup(func() { c2.Close() })
	l := newLink("peer", c1, 4, zerolog.New(zerolog.NewTestWriter(t)))
	l.resync.Store(false)
	return l, c2
}

// wantReceipt expects a successful receipt on got within five seconds.
func wantReceipt(t *testing.T, got <-chan error) {
	t.Helper()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("receipt: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no receipt")
	}
}
