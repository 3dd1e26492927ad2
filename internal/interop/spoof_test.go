package interop_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"xcollect.dev/xcollect/internal/xmpptest"
)

// badStanzas are a hostile client's stanzas to %[1]s: sender spoofing
// through prefixed attributes, and input that is not namespace-well-formed.
var badStanzas = []struct{ name, stanza, cond string }{
	{"empty prefix j:from", `<message to='%[1]s' type='chat' xmlns:j='' j:from='ceo@example.com/office'><body>spoofed</body></message>`, "not-well-formed"},
	{"j:from in jabber:client", `<message to='%[1]s' type='chat' xmlns:j='jabber:client' j:from='ceo@example.com/office'><body>spoofed</body></message>`, "invalid-xml"},
	{"xml:from", `<message to='%[1]s' type='chat' xml:from='ceo@example.com/office'><body>spoofed</body></message>`, "invalid-xml"},
	{"duplicate attribute", `<message to='%[1]s' type='chat' type='normal'><body>poison</body></message>`, "not-well-formed"},
	{"undeclared prefix", `<message to='%[1]s' type='chat'><body>poison</body><p:x/></message>`, "not-well-formed"},
	{"surrogate reference", `<message to='%[1]s' type='chat'><body>&#xD800;</body></message>`, "not-well-formed"},
}

// TestHostileSenderOrdinaryReceivers: a raw client sends spoofing and
// poison stanzas to a slixmpp or @xmpp/client receiver. The sender gets the
// stream error; the receiver stays connected, sees none of them, and sees
// the next honest message with the sender's true address.
func TestHostileSenderOrdinaryReceivers(t *testing.T) {
	t.Run("slixmpp", func(t *testing.T) {
		needSlixmpp(t)
		n := startNode(t, options{users: users()})
		p := startProc(t, "", nil, systemPython, filepath.Join("testdata", "slixmpp_receiver.py"), "127.0.0.1", n.port(), domain, bobPass)
		hostileSender(t, n, p, "bob@"+domain+"/slix")
	})
	t.Run("xmpp-client", func(t *testing.T) {
		needNodePackages(t, "@xmpp/client")
		n := startNode(t, options{users: users()})
		p := startProc(t, "node", []string{"NODE_TLS_REJECT_UNAUTHORIZED=0"}, "node", "receiver.js", "127.0.0.1", n.port(), domain, bobPass)
		hostileSender(t, n, p, "bob@"+domain+"/node")
	})
}

func hostileSender(t *testing.T, n *node, p *proc, bob string) {
	p.await("bob online", is("event", "session", "jid", bob))
	for _, tc := range badStanzas {
		a := xmpptest.DialC2S(t, n.c2s, domain, "alice", alicePass, xmpptest.C2SOptions{StartTLS: true, Resource: "evil"})
		if err := a.Send(fmt.Sprintf(tc.stanza, bob)); err != nil {
			t.Fatal(err)
		}
		var se *xmpptest.StreamError
		if err := a.Err(waitTimeout); !errors.As(err, &se) || se.Condition != tc.cond {
			t.Errorf("%s: sender got %v, want stream error %s", tc.name, err, tc.cond)
		}
		a.Close()
	}
	a := xmpptest.DialC2S(t, n.c2s, domain, "alice", alicePass, xmpptest.C2SOptions{StartTLS: true, Resource: "honest"})
	if err := a.Send("<message to='" + bob + "' type='chat'><body>honest</body></message><message to='" + bob + "' type='chat'><body>done</body></message>"); err != nil {
		t.Fatal(err)
	}
	p.wait()
	var got []string
	for _, e := range p.all() {
		switch e.str("event") {
		case "message":
			got = append(got, e.str("from")+" "+e.str("body"))
		case "disconnected", "stream_error", "client_error":
			t.Errorf("receiver: %v", e)
		}
	}
	from := "alice@" + domain + "/honest"
	if len(got) != 2 || got[0] != from+" honest" || got[1] != from+" done" {
		t.Fatalf("receiver got %q, want only the honest message and done from %s", got, from)
	}
}
