package component_test

import (
	"context"
	"testing"
	"time"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmpptest"
	"xcollect.dev/xcollect/server"
	"xcollect.dev/xcollect/storage"
)

// TestPresenceStaysInItsTenant: with two served domains, a component with
// receive_presence gets the presence of its own domain's users only.
func TestPresenceStaysInItsTenant(t *testing.T) {
	const other, compOther = "other.org", "collector.other.org"
	e := startEnv(t, envOpts{
		specs: []component.Spec{
			{JID: compA, Secret: secret, ReceivePresence: true},
			{JID: compOther, Secret: secret, ReceivePresence: true},
		},
		srvCfg: func(c *server.Config) { c.Domains = []string{domain, other} },
	})
	ours, theirs := e.component(compA), e.component(compOther)
	cred, err := storage.NewCredentials("pw-olga", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Users().CreateUser(context.Background(), "olga@"+other, cred); err != nil {
		t.Fatal(err)
	}
	olga := xmpptest.DialC2S(t, e.c2s, other, "olga", "pw-olga", xmpptest.C2SOptions{Resource: "desk"})
	if err := olga.Send("<presence><status>other tenant</status></presence>"); err != nil {
		t.Fatal(err)
	}
	isPresence := func(el *wire.Element) bool { return el.Name.Local == "presence" }
	if el := theirs.Expect(t, wait, isPresence); el.Get("from") != "olga@"+other+"/desk" {
		t.Fatalf("%s got %s", compOther, el.Raw)
	}
	// Then a user of example.com: compA gets it, and it must be the first
	// presence compA sees (olga's went nowhere near it).
	e.user("pres")
	u := e.login("pres", "phone")
	if err := u.Send("<presence/>"); err != nil {
		t.Fatal(err)
	}
	if el := ours.Expect(t, wait, isPresence); el.Get("from") != "pres@"+domain+"/phone" {
		t.Fatalf("%s got another tenant's presence first: %s", compA, el.Raw)
	}
	if el, err := theirs.Next(300 * time.Millisecond); err == nil && isPresence(el) {
		t.Fatalf("%s got another tenant's presence: %s", compOther, el.Raw)
	}
}
