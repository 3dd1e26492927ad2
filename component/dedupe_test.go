package component_test

import (
	"fmt"
	"testing"
	"time"

	"xcollect.dev/xcollect/component"
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
