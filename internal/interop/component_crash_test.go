package interop_test

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/xmpptest"
)

// TestSlixmppComponentKilledLosesNothing: a plain XEP-0114 slixmpp
// processor (no XEP-0198) dies in the middle of a stream of acknowledged
// reports; a second slixmpp processor gets every report the first did not
// handle, in order, and the queue drains (the node deleted rows only once
// slixmpp answered its pings).
func TestSlixmppComponentKilledLosesNothing(t *testing.T) {
	const total, crashAfter = 2000, 1500
	needSlixmpp(t)
	n := startNode(t, options{users: users(), components: []component.Spec{{JID: compJID, Secret: compPass}}})
	sendAckedReports(t, n, total)
	testutil.WaitFor(t, waitTimeout, "all reports queued", func() bool { return n.queuedRows(t, compJID) == total })

	_, port, _ := strings.Cut(n.comp, ":")
	first := startProc(t, "", nil, systemPython, "testdata/slixmpp_component.py", "127.0.0.1", port, compJID, compPass, strconv.Itoa(crashAfter))
	first.await("crash", is("event", "crash"))
	<-first.exited

	handled := map[int]bool{}
	for _, e := range first.all() {
		if e.str("event") == "message" {
			handled[reportSeq(t, e.str("id"))] = true
		}
	}
	var second *proc
	testutil.WaitFor(t, waitTimeout, "second processor online", func() bool {
		second = startProc(t, "", nil, systemPython, "testdata/slixmpp_component.py", "127.0.0.1", port, compJID, compPass, "0")
		e := second.await("online or refused", func(e event) bool { return e.str("event") == "online" || e.str("event") == "stream_error" })
		if e.str("event") == "online" {
			return true
		}
		second.cancel() // refused (conflict): the node has not seen the first one die yet
		<-second.exited
		return false
	})
	testutil.WaitFor(t, waitTimeout, "every report handled by one of the two processors", func() bool {
		got := 0
		for _, e := range second.all() {
			if e.str("event") == "message" && !handled[reportSeq(t, e.str("id"))] {
				got++
			}
		}
		return len(handled)+got >= total
	})
	seen := map[int]bool{}
	prev := -1
	for _, e := range second.all() {
		if e.str("event") != "message" {
			continue
		}
		s := reportSeq(t, e.str("id"))
		if s != prev+1 && prev != -1 {
			t.Fatalf("second processor: r%d after r%d: order broken or a report skipped", s, prev)
		}
		prev = s
		seen[s] = true
	}
	for i := range total {
		if !handled[i] && !seen[i] {
			t.Fatalf("report r%d lost", i)
		}
	}
	testutil.WaitFor(t, waitTimeout, "empty queue", func() bool { return n.queuedRows(t, compJID) == 0 })
	t.Logf("first processor handled %d and died; the second got %d (from r%d)", len(handled), len(seen), prev-len(seen)+1)
}

func reportSeq(t *testing.T, id string) int {
	t.Helper()
	s, err := strconv.Atoi(strings.TrimPrefix(id, "r"))
	if err != nil || !strings.HasPrefix(id, "r") {
		t.Fatalf("unexpected report id %q", id)
	}
	return s
}

// TestStoppedSlixmppComponentReplaced: a slixmpp processor stopped with
// SIGSTOP keeps its connection; the node pings it, closes the silent
// stream after ping_timeout, and a replacement connects and gets every
// acknowledged report.
func TestStoppedSlixmppComponentReplaced(t *testing.T) {
	const total = 200
	idle, pingTimeout := 500*time.Millisecond, time.Second
	needSlixmpp(t)
	n := startNode(t, options{users: users(), components: []component.Spec{{JID: compJID, Secret: compPass}},
		componentCfg: func(c *component.Config) { c.IdleTimeout, c.PingTimeout = idle, pingTimeout }})
	_, port, _ := strings.Cut(n.comp, ":")
	stopped := startProc(t, "", nil, systemPython, "testdata/slixmpp_component.py", "127.0.0.1", port, compJID, compPass, "0")
	stopped.await("online", is("event", "online"))
	if err := stopped.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()

	sendAckedReports(t, n, total)

	var next *xmpptest.Conn
	testutil.WaitFor(t, waitTimeout, "replacement connected", func() bool {
		c, err := xmpptest.TryDialComponent(n.comp, compJID, compPass)
		if err != nil {
			return false
		}
		next = c
		return true
	})
	defer next.Close()
	took := time.Since(start)
	t.Logf("replacement connected %s after SIGSTOP", took.Round(time.Millisecond))
	if took > idle+pingTimeout+3*time.Second {
		t.Fatalf("replacement took %s; want within idle + ping_timeout (+ the 2 s close grace)", took)
	}
	for i := range total {
		el, err := next.Next(waitTimeout)
		if err != nil {
			t.Fatalf("after %d reports: %v", i, err)
		}
		if got := el.Get("id"); got != fmt.Sprintf("r%d", i) {
			t.Fatalf("report %d: got %s", i, el.Raw)
		}
	}
	testutil.WaitFor(t, waitTimeout, "empty queue", func() bool { return n.queuedRows(t, compJID) == 0 })
}

// sendAckedReports logs alice in with XEP-0198 and sends total reports
// r0…r(total-1) to the component; it returns once the node acknowledged
// them all (durable).
func sendAckedReports(t *testing.T, n *node, total int) {
	t.Helper()
	alice := xmpptest.DialC2S(t, n.c2s, domain, "alice", alicePass, xmpptest.C2SOptions{StartTLS: true, Resource: "go"})
	if err := alice.EnableSM(false); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for i := range total {
		fmt.Fprintf(&b, "<message to='%s' type='normal' id='r%d'><body>report %d</body></message>", compJID, i, i)
	}
	if err := alice.Send(b.String() + "<r xmlns='urn:xmpp:sm:3'/>"); err != nil {
		t.Fatal(err)
	}
	if err := alice.WaitAck(uint32(total), waitTimeout); err != nil {
		t.Fatal(err)
	}
}
