package component_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/wire"
)

func TestQueueLimitResourceConstraint(t *testing.T) {
	e := startEnv(t, envOpts{specs: []component.Spec{{JID: compA, Secret: secret, MaxRows: 5}}})
	e.user("lim")
	c := e.login("lim", "r")
	if err := c.EnableSM(false); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if err := c.Send(report("lim", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.RequestAck(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitAck(8, wait); err != nil {
		t.Fatal(err)
	}
	var errs []string
	for len(errs) < 3 {
		el := c.Expect(t, wait, func(el *wire.Element) bool { return el.Get("type") == "error" })
		raw := string(el.Raw)
		if !strings.Contains(raw, "type='wait'") || !strings.Contains(raw, "<resource-constraint") {
			t.Fatalf("want <error type='wait'><resource-constraint/>, got %s", raw)
		}
		errs = append(errs, el.Get("id"))
	}
	if strings.Join(errs, ",") != "lim-5,lim-6,lim-7" {
		t.Fatalf("bounced %v, want lim-5..7", errs)
	}
}

func TestDedupe(t *testing.T) {
	e := startEnv(t, envOpts{specs: []component.Spec{{JID: compA, Secret: secret, DedupeWindow: time.Minute}}})
	e.user("dup")
	c := e.login("dup", "r")
	if err := c.EnableSM(false); err != nil {
		t.Fatal(err)
	}
	// The sender asserts uniqueness with XEP-0359 origin-ids: a repeat is
	// dropped (TestDedupeOnlyOnOriginID: a repeated stanza id is not).
	withOrigin := func(s, id string) string {
		return strings.Replace(s, "</message>", "<origin-id xmlns='urn:xmpp:sid:0' id='"+id+"'/></message>", 1)
	}
	for _, s := range []string{withOrigin(report("dup", 1), "o1"), withOrigin(report("dup", 1), "o1"), withOrigin(report("dup", 2), "o2")} {
		if err := c.Send(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.RequestAck(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitAck(3, wait); err != nil { // the duplicate is acknowledged too
		t.Fatal(err)
	}
	comp := e.component(compA)
	var ids []string
	for len(ids) < 2 {
		ids = append(ids, comp.Expect(t, wait, isMessage).Get("id"))
	}
	if ids[0] != "dup-1" || ids[1] != "dup-2" {
		t.Fatalf("delivered %v, want [dup-1 dup-2]", ids)
	}
	if el, err := comp.Next(300 * time.Millisecond); err == nil {
		t.Fatalf("unexpected extra delivery %s", el.Raw)
	}
}

func TestExpiryToDeadLetters(t *testing.T) {
	e := startEnv(t, envOpts{
		specs: []component.Spec{{JID: compA, Secret: secret, MaxAge: 100 * time.Millisecond}},
		cfg:   func(c *component.Config) { c.ExpiryInterval = 50 * time.Millisecond },
	})
	e.user("old")
	c := e.login("old", "r")
	if err := c.EnableSM(false); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(report("old", 1)); err != nil {
		t.Fatal(err)
	}
	if err := c.RequestAck(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitAck(1, wait); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, wait, "dead letter", func() bool {
		dead, err := e.store.Queue().List(context.Background(), compA, true, 10)
		return err == nil && len(dead) == 1 && dead[0].Reason == "expired" && dead[0].StanzaID == "old-1"
	})
	rows, err := e.store.Queue().List(context.Background(), compA, false, 10)
	if err != nil || len(rows) != 0 {
		t.Fatalf("queue still has %d rows (err %v)", len(rows), err)
	}
}

func TestPresenceForwardingAndProbe(t *testing.T) {
	e := startEnv(t, envOpts{specs: []component.Spec{{JID: compA, Secret: secret, ReceivePresence: true}}})
	comp := e.component(compA)
	e.user("pres")
	u := e.login("pres", "phone")
	if err := u.Send("<presence><status>online and measuring</status></presence>"); err != nil {
		t.Fatal(err)
	}
	el := comp.Expect(t, wait, func(el *wire.Element) bool { return el.Name.Local == "presence" })
	if el.Get("from") != "pres@example.com/phone" || !strings.Contains(string(el.Raw), "online and measuring") {
		t.Fatalf("presence %s", el.Raw)
	}
	if err := comp.Send("<presence type='probe' from='" + compA + "' to='pres@example.com'/>"); err != nil {
		t.Fatal(err)
	}
	el = comp.Expect(t, wait, func(el *wire.Element) bool { return el.Name.Local == "presence" })
	if el.Get("from") != "pres@example.com/phone" || el.Get("type") == "unavailable" || !strings.Contains(string(el.Raw), "online and measuring") {
		t.Fatalf("probe answer %s", el.Raw)
	}
	// A user who is offline is reported unavailable.
	e.user("gone")
	if err := comp.Send("<presence type='probe' from='" + compA + "' to='gone@example.com'/>"); err != nil {
		t.Fatal(err)
	}
	el = comp.Expect(t, wait, func(el *wire.Element) bool { return el.Name.Local == "presence" })
	if !strings.HasPrefix(el.Get("from"), "gone@example.com") || el.Get("type") != "unavailable" {
		t.Fatalf("probe answer for offline user %s", el.Raw)
	}
}

func TestComponentToOfflineUser(t *testing.T) {
	e := startEnv(t, envOpts{})
	comp := e.component(compA)
	e.user("later")
	if err := comp.Send("<message from='" + compA + "' to='later@example.com' id='cmd1'><body>reboot</body></message>"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, wait, "offline message stored", func() bool {
		msgs, err := e.store.Offline().FetchOffline(context.Background(), "later@example.com", time.Time{})
		return err == nil && len(msgs) == 1
	})
	u := e.login("later", "r")
	if err := u.Send("<presence/>"); err != nil {
		t.Fatal(err)
	}
	el := u.Expect(t, wait, isMessage)
	if el.Get("from") != compA || !strings.Contains(string(el.Raw), "reboot") {
		t.Fatalf("got %s", el.Raw)
	}
}

func TestComponentToBareJIDOfOnlineUser(t *testing.T) {
	e := startEnv(t, envOpts{})
	comp := e.component(compA)
	e.user("now")
	u := e.login("now", "desk")
	if err := u.Send("<presence/>"); err != nil {
		t.Fatal(err)
	}
	// The presence was handled once the server acks it.
	if err := u.EnableSM(false); err != nil {
		t.Fatal(err)
	}
	if err := comp.Send("<message from='sensor1@" + compA + "' to='now@example.com' id='push1'><body>alarm</body></message>"); err != nil {
		t.Fatal(err)
	}
	// Delivered with 'to' as the component wrote it, the bare JID.
	el := u.Expect(t, wait, isMessage)
	if el.Get("from") != "sensor1@"+compA || el.Get("to") != "now@example.com" || !strings.Contains(string(el.Raw), "alarm") {
		t.Fatalf("got %s", el.Raw)
	}
}

// TestComponentPingsServer: an IQ from a component to the server is
// answered through the component's queue.
func TestComponentPingsServer(t *testing.T) {
	e := startEnv(t, envOpts{})
	comp := e.component(compA)
	if err := comp.Send("<iq from='" + compA + "' to='example.com' type='get' id='cping'><ping xmlns='urn:xmpp:ping'/></iq>"); err != nil {
		t.Fatal(err)
	}
	el := comp.Expect(t, wait, func(el *wire.Element) bool { return el.Get("id") == "cping" })
	if el.Get("type") != "result" || el.Get("to") != compA {
		t.Fatalf("got %s", el.Raw)
	}
}
