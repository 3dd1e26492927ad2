package interop_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmpptest"
)

// rawLogin logs a raw client in as local@domain/res over STARTTLS.
func rawLogin(t *testing.T, n *node, local, pass, res string) *xmpptest.Conn {
	t.Helper()
	return xmpptest.DialC2S(t, n.c2s, domain, local, pass, xmpptest.C2SOptions{StartTLS: true, Resource: res})
}

// presenceFrom matches an available presence (no type) from full.
func presenceFrom(full string) func(*wire.Element) bool {
	return func(el *wire.Element) bool {
		return el.Name.Local == "presence" && el.Get("type") == "" && el.Get("from") == full
	}
}

// TestOwnPresenceReflected: RFC 6121 §4.2.2 and §4.4.2: the server sends a
// user's available presence to all of the user's available resources,
// including the one that sent it; clients wait for it.
func TestOwnPresenceReflected(t *testing.T) {
	n := startNode(t, options{users: users()})
	a1 := rawLogin(t, n, "alice", alicePass, "one")
	_ = a1.Send("<presence/>")
	a1.Expect(t, waitTimeout, presenceFrom(a1.JID)) // initial presence, alone

	a2 := rawLogin(t, n, "alice", alicePass, "two")
	_ = a2.Send("<presence><status>second</status></presence>")
	for _, c := range []*xmpptest.Conn{a1, a2} {
		c.Expect(t, waitTimeout, func(el *wire.Element) bool {
			return presenceFrom(a2.JID)(el) && bytes.Contains(el.Raw, []byte("second"))
		})
	}
	// a subsequent presence (§4.4.2) too
	_ = a1.Send("<presence><show>away</show></presence>")
	for _, c := range []*xmpptest.Conn{a1, a2} {
		c.Expect(t, waitTimeout, func(el *wire.Element) bool {
			return presenceFrom(a1.JID)(el) && bytes.Contains(el.Raw, []byte("away"))
		})
	}
}

// loginScript is a third-party client library run by a script that logs
// in N sessions of one account (see testdata/slixmpp_logins.py).
type loginScript struct {
	name   string
	need   func(*testing.T)
	prefix string // resource prefix the script uses
	start  func(t *testing.T, host, port, user, pass string, n int, gap string) *proc
}

func loginScripts() []loginScript {
	python := func(script string) func(t *testing.T, host, port, user, pass string, n int, gap string) *proc {
		return func(t *testing.T, host, port, user, pass string, n int, gap string) *proc {
			return startProc(t, "", nil, systemPython, filepath.Join("testdata", script), host, port, domain, user, pass, strconv.Itoa(n), gap)
		}
	}
	return []loginScript{
		{"slixmpp", needSlixmpp, "slix", python("slixmpp_logins.py")},
		{"aioxmpp", needAioxmpp, "aio", python("aioxmpp_logins.py")},
		{"xmpp.js", func(t *testing.T) { needNodePackages(t, "@xmpp/client") }, "node",
			func(t *testing.T, host, port, user, pass string, n int, gap string) *proc {
				return startProc(t, "node", []string{"NODE_TLS_REJECT_UNAUTHORIZED=0"}, "node", "logins.js", host, port, domain, user, pass, strconv.Itoa(n), gap)
			}},
	}
}

// TestClientsGetOwnPresence: slixmpp, aioxmpp and @xmpp/client sessions
// that send their presence see it come back from the server (a user is
// subscribed to itself), the first alone, the second next to it.
func TestClientsGetOwnPresence(t *testing.T) {
	for _, ls := range loginScripts() {
		t.Run(ls.name, func(t *testing.T) {
			ls.need(t)
			n := startNode(t, options{users: users()})
			p := ls.start(t, "127.0.0.1", n.port(), "alice", alicePass, 2, "0")
			p.wait()
			for k := range 2 {
				full := fmt.Sprintf("alice@%s/%s%d", domain, ls.prefix, k)
				p.await(full+" online", is("event", "online", "jid", full))
				p.await(full+" own presence", is("event", "self_presence", "jid", full))
			}
			p.await("done", is("event", "done"))
		})
	}
}

// TestBareJIDKeepsTo: a message to a bare JID reaches the user's resource
// with 'to' unchanged (as Prosody and ejabberd deliver it), whether it comes
// from a client, from a component, or out of offline storage.
func TestBareJIDKeepsTo(t *testing.T) {
	n := startNode(t, options{users: users(), components: []component.Spec{{JID: compJID, Secret: compPass}}})
	bare := "bob@" + domain
	toBare := func(id string) func(*wire.Element) bool {
		return func(el *wire.Element) bool { return el.Name.Local == "message" && el.Get("id") == id }
	}
	check := func(t *testing.T, el *wire.Element, want string) {
		t.Helper()
		if got := el.Get("to"); got != want {
			t.Fatalf("delivered with to=%q, want %q: %s", got, want, el.Raw)
		}
	}

	// Offline first: nobody of bob's is online.
	alice := rawLogin(t, n, "alice", alicePass, "a")
	_ = alice.Send("<presence/>")
	_ = alice.Send("<message to='" + bare + "' id='off1' type='chat'><body>stored</body></message>")
	proc := xmpptest.DialComponent(t, n.comp, compJID, compPass)
	_ = proc.Send("<message from='" + compJID + "' to='" + bare + "' id='off2'><body>stored from component</body></message>")
	testutil.WaitFor(t, waitTimeout, "two offline messages for bob", func() bool {
		msgs, err := n.store.Offline().FetchOffline(t.Context(), bare, time.Time{})
		return err == nil && len(msgs) == 2
	})

	bob := rawLogin(t, n, "bob", bobPass, "b")
	_ = bob.Send("<presence/>")
	t.Run("offline storage", func(t *testing.T) {
		// The two were stored by different goroutines: either order.
		for left := map[string]bool{"off1": true, "off2": true}; len(left) > 0; {
			el := bob.Expect(t, waitTimeout, func(el *wire.Element) bool { return el.Name.Local == "message" && left[el.Get("id")] })
			check(t, el, bare)
			delete(left, el.Get("id"))
		}
	})
	t.Run("client to bare JID", func(t *testing.T) {
		_ = alice.Send("<message to='" + bare + "' id='c1' type='chat'><body>hi</body></message>")
		el := bob.Expect(t, waitTimeout, toBare("c1"))
		check(t, el, bare)
		if el.Get("from") != alice.JID {
			t.Fatalf("from = %q, want %q", el.Get("from"), alice.JID)
		}
	})
	t.Run("component to bare JID", func(t *testing.T) {
		_ = proc.Send("<message from='" + compJID + "' to='" + bare + "' id='k1'><body>command</body></message>")
		check(t, bob.Expect(t, waitTimeout, toBare("k1")), bare)
	})
	t.Run("client to full JID", func(t *testing.T) {
		_ = alice.Send("<message to='" + bob.JID + "' id='c2' type='chat'><body>hi</body></message>")
		check(t, bob.Expect(t, waitTimeout, toBare("c2")), bob.JID)
	})
	t.Run("no to is the sender's bare JID", func(t *testing.T) {
		// RFC 6120 §10.3: a stanza without 'to' is handled as sent to the
		// account's bare JID; say so on the wire.
		_ = bob.Send("<message id='self1' type='chat'><body>note to self</body></message>")
		check(t, bob.Expect(t, waitTimeout, toBare("self1")), bare)
	})
}
