package clustertest

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/xmpptest"
)

// TestResumeAfterOwnerDied: a client whose node is SIGKILLed resumes its
// XEP-0198 session on another node from the standby's copy: <resumed/>
// carries the handled count it was last told, the stanzas it had not
// acknowledged are resent, a message sent while it was away arrives, and
// new ones follow it. When nobody resumes a dead node's session in time,
// the standby stores its unacknowledged stanzas offline and a late
// <resume/> gets <failed h/> with the handled count.
func TestResumeAfterOwnerDied(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.DSN()
	const timeout = 3 * time.Second
	nodes := startClusterOn(t, dsn, "1000", []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, nil,
		clusterOpts{extra: fmt.Sprintf("stream_management: {resume_timeout: %v}", timeout)})
	addUsers(t, dsn, "alice", "bob")

	a, b := aliceAndBob(t, nodes)
	// throughM1 is alice's count once she has read m1: acking it acks m1
	// and whatever came before (her own reflected presence may come before
	// or after m1: it is broadcast after a roster read), and leaves m2, m3
	// and anything after m1 unacknowledged.
	var throughM1 uint32
	for _, m := range []string{"m1", "m2", "m3"} {
		_ = b.Send("<message to='" + a.JID + "' id='" + m + "'><body>" + m + "</body></message>")
		expect(t, a, ">"+m+"<")
		if m == "m1" {
			throughM1 = a.Received()
		}
	}
	for i := 1; i <= 5; i++ {
		_ = a.Send(fmt.Sprintf("<message to='%s' id='a%d'><body>a%d</body></message>", b.JID, i, i))
	}
	// presence + 5 messages handled; the server answers once its standby
	// has the count.
	_ = a.RequestAck()
	if err := a.WaitAck(6, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		expect(t, b, fmt.Sprintf(">a%d<", i))
	}
	_ = a.Ack(throughM1) // m2 and m3 are not acknowledged
	time.Sleep(300 * time.Millisecond)

	killed := time.Now()
	if err := nodes[0].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	a.Drop()
	// While alice is away, bob's message for her is stored offline.
	time.Sleep(300 * time.Millisecond)
	_ = b.Send("<message to='" + a.JID + "' id='m4'><body>m4</body></message>")
	time.Sleep(300 * time.Millisecond)

	dialed := time.Now()
	a2 := xmpptest.DialC2S(t, nodes[2].c2s, "example.com", "alice", "pw",
		xmpptest.C2SOptions{Resume: &xmpptest.Resume{PrevID: a.SMID, H: throughM1}})
	t.Logf("resumed on node3 %v after node1's SIGKILL; connect + auth + <resume/> took %v",
		time.Since(killed).Round(time.Millisecond), time.Since(dialed).Round(time.Millisecond))
	if a2.ResumedH != 6 {
		t.Fatalf("resumed on node3 with h=%d, want 6 (presence + 5 messages)", a2.ResumedH)
	}
	for _, m := range []string{"m2", "m3", "m4"} {
		expect(t, a2, ">"+m+"<")
	}
	_ = b.Send("<message to='" + a.JID + "' id='m5'><body>m5</body></message>")
	expect(t, a2, ">m5<")

	// Now node3 (alice's new node; its standby is node2) dies with m6
	// unacknowledged, and nobody resumes in time.
	a2.SetAutoAck(false)
	_ = a2.Send("<message to='" + b.JID + "' id='a6'><body>a6</body></message>")
	_ = a2.RequestAck()
	if err := a2.WaitAck(7, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	_ = a2.Ack(a2.Received())
	_ = b.Send("<message to='" + a.JID + "' id='m6'><body>m6</body></message>")
	expect(t, a2, ">m6<")
	time.Sleep(300 * time.Millisecond)
	if err := nodes[2].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	a2.Drop()
	b.Drop()
	testutil.WaitFor(t, 20*time.Second, "node2 to give up on node3's session", func() bool {
		return strings.Count(nodes[1].logs(), "session copy expired") >= 1
	})
	_, err := xmpptest.TryDialC2S(nodes[1].c2s, "example.com", "alice", "pw",
		xmpptest.C2SOptions{Resume: &xmpptest.Resume{PrevID: a.SMID, H: a2.Received() - 1}})
	f, ok := err.(*xmpptest.ResumeFailed)
	if !ok || !f.HSet || f.H != 7 {
		t.Fatalf("late resume: %v, want <failed h='7'/>", err)
	}
	// alice binds anew: the unacknowledged m6 waits in offline storage.
	a3 := dial(t, nodes[1], "alice")
	_ = a3.Send("<presence/>")
	expect(t, a3, ">m6<")
}

// TestGracefulStopDropsCopies: a node stopped with SIGTERM ends its
// sessions itself (system-shutdown) and stores their unacknowledged
// stanzas offline; it first tells the other nodes to drop their copies, so
// nothing is delivered twice when the copy would have expired.
func TestGracefulStopDropsCopies(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.DSN()
	const timeout = 2 * time.Second
	nodes := startClusterOn(t, dsn, "1000", []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, nil,
		clusterOpts{extra: fmt.Sprintf("stream_management: {resume_timeout: %v}", timeout)})
	addUsers(t, dsn, "alice", "bob")
	a, b := aliceAndBob(t, nodes)
	_ = b.Send("<message to='" + a.JID + "' id='g1'><body>g1</body></message>")
	expect(t, a, ">g1<") // never acknowledged
	time.Sleep(300 * time.Millisecond)
	if err := nodes[0].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "node2 to drop node1's copies", func() bool {
		return strings.Contains(nodes[1].logs(), "its session copies dropped")
	})
	// Past the resumption timeout, nobody stores g1 a second time.
	time.Sleep(timeout + 2*time.Second)
	if strings.Contains(nodes[1].logs(), "session copy expired") {
		t.Fatal("node2 expired a copy of a node that left gracefully")
	}
	a2 := dial(t, nodes[2], "alice")
	_ = a2.Send("<presence/>")
	expect(t, a2, ">g1<")
	if el, err := a2.Next(time.Second); err == nil && strings.Contains(string(el.Raw), ">g1<") {
		t.Fatalf("g1 delivered twice: %s", el.Raw)
	}
}

// aliceAndBob logs alice in on node1 (her standby is node2) with
// resumable XEP-0198 and no automatic acks, available, and bob on node3,
// and waits until node3 knows alice.
func aliceAndBob(t *testing.T, nodes []*node) (alice, bob *xmpptest.Conn) {
	t.Helper()
	a := dial(t, nodes[0], "alice")
	if err := a.EnableSM(true); err != nil {
		t.Fatal(err)
	}
	a.SetAutoAck(false)
	_ = a.Send("<presence/>")
	b := dial(t, nodes[2], "bob")
	testutil.WaitFor(t, 10*time.Second, "alice in node3's directory", func() bool {
		d, _ := status(t, nodes[2].http)
		return d >= 1
	})
	return a, b
}
