package component_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/xmpptest"
	"xcollect.dev/xcollect/server"
)

// TestDedupeOnlyOnOriginID: a client that numbers its stanzas 1..100 on
// every connection sends 300 distinct reports over three connections, and
// all 300 reach the processor; a report whose XEP-0359 origin-id repeats
// across reconnects (a retry) reaches it once.
func TestDedupeOnlyOnOriginID(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { testDedupeOnlyOnOriginID(t, false) })
	t.Run("postgres", func(t *testing.T) { testDedupeOnlyOnOriginID(t, true) })
}

func testDedupeOnlyOnOriginID(t *testing.T, pg bool) {
	e := startEnv(t, envOpts{specs: []component.Spec{{JID: compA, Secret: secret, DedupeWindow: 24 * time.Hour}}, quiet: true, postgres: pg})
	e.user("counter")
	e.user("retrier")
	send := func(local string, n int, body func(i int) string) {
		c := e.login(local, "r")
		if err := c.EnableSM(false); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= n; i++ {
			if err := c.Send(body(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.RequestAck(); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitAck(uint32(n), wait); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	for conn := range 3 {
		send("counter", 100, func(i int) string {
			return fmt.Sprintf("<message to='%s' id='%d'><r xmlns='urn:x:r' conn='%d'/></message>", compA, i, conn)
		})
	}
	for conn := range 2 {
		send("retrier", 10, func(i int) string {
			return fmt.Sprintf("<message to='%s' id='c%d-%d'><r xmlns='urn:x:r'/><origin-id xmlns='urn:xmpp:sid:0' id='o-%d'/></message>", compA, conn, i, i)
		})
	}

	comp := e.component(compA)
	got := map[string]int{}
	total := 0
	for total < 310 {
		el, err := comp.Next(wait)
		if err != nil {
			t.Fatalf("after %d reports (%v): %v", total, got, err)
		}
		if isMessage(el) {
			got[el.Get("from")[:len("counter")]]++
			total++
		}
	}
	// Nothing beyond: a repeated origin-id is not delivered twice.
	if el, err := comp.Next(500 * time.Millisecond); err == nil && isMessage(el) {
		t.Fatalf("extra report %s", el.Raw)
	}
	if got["counter"] != 300 || got["retrier"] != 10 {
		t.Fatalf("delivered %v; want counter 300, retrier 10", got)
	}
}

// TestResumeResendsNoDuplicates: within one XEP-0198 session the exact h
// of <resumed/> is the dedupe: a client that drops its connection right
// after sending reports without origin-ids, resumes, and resends those
// after h (with the same stanza ids), has each report delivered once. (On
// loopback the server has read them all before it sees the drop, so h is
// usually n and nothing is resent: the test guards that h is exact, that
// is, the resumption waited for the commits.)
func TestResumeResendsNoDuplicates(t *testing.T) {
	const n = 200
	e := startEnv(t, envOpts{specs: []component.Spec{{JID: compA, Secret: secret, DedupeWindow: 24 * time.Hour}}, quiet: true,
		srvCfg: func(c *server.Config) { c.SMResumeTimeout = time.Minute }})
	e.user("resumer")
	body := func(i int) string {
		return fmt.Sprintf("<message to='%s' id='resumer-%d'><r xmlns='urn:x:r'/></message>", compA, i)
	}
	c, err := xmpptest.TryDialC2S(e.c2s, domain, "resumer", "pw-resumer", xmpptest.C2SOptions{Resource: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnableSM(true); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for i := range n {
		b.WriteString(body(i))
	}
	if err := c.Send(b.String()); err != nil {
		t.Fatal(err)
	}
	c.Drop() // no ack awaited: some reports may still be on their way to the queue

	var r *xmpptest.Conn
	testutil.WaitFor(t, wait, "resumption", func() bool {
		// item-not-found until the server noticed the drop
		r, err = xmpptest.TryDialC2S(e.c2s, domain, "resumer", "pw-resumer", xmpptest.C2SOptions{Resume: &xmpptest.Resume{PrevID: c.SMID}})
		return err == nil
	})
	defer r.Close()
	h := int(r.ResumedH)
	b.Reset()
	for i := h; i < n; i++ {
		b.WriteString(body(i))
	}
	if err := r.Send(b.String() + "<r xmlns='urn:xmpp:sm:3'/>"); err != nil {
		t.Fatal(err)
	}
	if err := r.WaitAck(n, wait); err != nil {
		t.Fatal(err)
	}
	t.Logf("resumed with h=%d, resent %d", h, n-h)

	comp := e.component(compA)
	var got recv
	for got.total < n {
		el, err := comp.Next(wait)
		if err != nil {
			t.Fatalf("after %d: %v", got.total, err)
		}
		got.add(t, el)
	}
	if el, err := comp.Next(500 * time.Millisecond); err == nil && isMessage(el) {
		t.Fatalf("report delivered twice: %s", el.Raw)
	}
	for i, s := range got.seqs["resumer"] {
		if s != i {
			t.Fatalf("report %d is resumer-%d: lost, repeated or out of order", i, s)
		}
	}
}
