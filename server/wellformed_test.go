package server_test

import (
	"encoding/xml"
	"fmt"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmpptest"
	"xcollect.dev/xcollect/server"
)

// badStanzas are stanzas a client may not send; %[1]s is the recipient.
// Each one was relayed byte for byte before the Decoder checked XML 1.0 +
// Namespaces well-formedness and spoofable addressing.
var badStanzas = []struct{ name, stanza, cond string }{
	{"duplicate attribute", `<message to='%[1]s' type='chat' type='normal'><body>x</body></message>`, wire.NotWellFormed},
	{"undeclared element prefix", `<message to='%[1]s'><body>x</body><p:x/></message>`, wire.NotWellFormed},
	{"undeclared attribute prefix deep", `<message to='%[1]s'><body>x</body><x xmlns='urn:x'><y p:a='1'/></x></message>`, wire.NotWellFormed},
	{"surrogate character reference", `<message to='%[1]s'><body>&#xD800;</body></message>`, wire.NotWellFormed},
	{"nul character reference", `<message to='%[1]s'><body>&#x0;</body></message>`, wire.NotWellFormed},
	{"raw control character", "<message to='%[1]s'><body>\x01</body></message>", wire.NotWellFormed},
	{"no space between attributes", `<message to='%[1]s'id='x'><body>x</body></message>`, wire.NotWellFormed},
	{"empty prefixed namespace j:from", `<message to='%[1]s' xmlns:j='' j:from='ceo@example.com/office'><body>x</body></message>`, wire.NotWellFormed},
	{"j:from in jabber:client", `<message to='%[1]s' xmlns:j='jabber:client' j:from='ceo@example.com/office'><body>x</body></message>`, wire.InvalidXML},
	{"j:from in another namespace", `<message to='%[1]s' xmlns:j='urn:x' j:from='ceo@example.com/office'><body>x</body></message>`, wire.InvalidXML},
	{"xml:from", `<message to='%[1]s' xml:from='ceo@example.com/office'><body>x</body></message>`, wire.InvalidXML},
	{"prefixed to", `<message xmlns:j='urn:x' j:to='%[1]s'><body>x</body></message>`, wire.InvalidXML},
}

// TestBadStanzasAreRefused: a client sending a poison or spoofing stanza
// gets the stream error (RFC 6120 §4.9.3); nothing reaches an online
// recipient with XEP-0198, one whose XEP-0198 session waits for
// resumption, or an offline one, and all of them log in (or resume) as
// usual afterwards. The recipients read with the strict wire.Decoder: a
// relayed poison stanza would end their stream.
func TestBadStanzasAreRefused(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.RequireTLS = false })
	n.addUser(t, "alice@example.com", "a")
	n.addUser(t, "bob@example.com", "b")
	n.addUser(t, "carol@example.com", "c")
	n.addUser(t, "dave@example.com", "d")
	dave := xmpptest.DialC2S(t, n.addr, "example.com", "dave", "d", xmpptest.C2SOptions{Resource: "tab"})
	if err := dave.EnableSM(true); err != nil {
		t.Fatal(err)
	}
	daveSM := dave.SMID
	dave.Drop() // a lost connection: the session waits for resumption
	bob := xmpptest.DialC2S(t, n.addr, "example.com", "bob", "b", xmpptest.C2SOptions{Resource: "desk"})
	if err := bob.EnableSM(true); err != nil {
		t.Fatal(err)
	}
	for _, tc := range badStanzas {
		for _, to := range []string{"bob@example.com/desk", "carol@example.com", "dave@example.com/tab"} {
			a := dialRaw(t, n.addr)
			a.login("alice", "example.com", "a", "phone")
			a.write(fmt.Sprintf(tc.stanza, to))
			if got := a.readUntil("</stream:stream>", 5*time.Second); !strings.Contains(got, "<stream:error><"+tc.cond) {
				t.Errorf("%s to %s: got %q, want stream error %s", tc.name, to, got, tc.cond)
			}
			a.conn.Close()
		}
	}
	a := dialRaw(t, n.addr)
	a.login("alice", "example.com", "a", "phone")
	a.write("<message to='bob@example.com/desk' id='ok1'><body>after the poison</body></message>" +
		"<message to='carol@example.com' id='ok2'><body>after the poison</body></message>" +
		"<message to='dave@example.com/tab' id='ok3'><body>after the poison</body></message>")

	first := bob.Expect(t, 5*time.Second, func(el *wire.Element) bool { return el.Name.Local == "message" })
	if !strings.Contains(string(first.Raw), "after the poison") || first.Get("from") != "alice@example.com/phone" {
		t.Fatalf("bob's first message: %s", first.Raw)
	}
	bob.Close()
	bob2 := xmpptest.DialC2S(t, n.addr, "example.com", "bob", "b", xmpptest.C2SOptions{Resource: "desk"})
	if err := bob2.EnableSM(true); err != nil {
		t.Fatal(err)
	}

	dave2 := xmpptest.DialC2S(t, n.addr, "example.com", "dave", "d", xmpptest.C2SOptions{Resume: &xmpptest.Resume{PrevID: daveSM}})
	first = dave2.Expect(t, 5*time.Second, func(el *wire.Element) bool { return el.Name.Local == "message" })
	if !strings.Contains(string(first.Raw), "after the poison") {
		t.Fatalf("dave's first message after resuming: %s", first.Raw)
	}

	for i := 0; i < 2; i++ { // the second login finds the offline store empty
		carol := xmpptest.DialC2S(t, n.addr, "example.com", "carol", "c", xmpptest.C2SOptions{Resource: "r"})
		if err := carol.Send("<presence/><iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>"); err != nil {
			t.Fatal(err)
		}
		var msgs []string
		carol.Expect(t, 5*time.Second, func(el *wire.Element) bool {
			if el.Name.Local == "message" {
				msgs = append(msgs, string(el.Raw))
			}
			return el.Get("id") == "ping"
		})
		if i == 0 && (len(msgs) != 1 || !strings.Contains(msgs[0], "after the poison")) {
			t.Fatalf("carol's offline messages: %q", msgs)
		}
		if i == 1 && len(msgs) != 0 {
			t.Fatalf("carol's second login got %q", msgs)
		}
		carol.Close()
	}
}

// TestSpoofedSenderNotSeenByEncodingXML: receivers built on encoding/xml
// (mellium) read an attribute by its local name; whatever a client puts on
// a message, they see the sender the server stamped.
func TestSpoofedSenderNotSeenByEncodingXML(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.RequireTLS = false })
	n.addUser(t, "alice@example.com", "a")
	n.addUser(t, "bob@example.com", "b")
	bob, err := dialMellium(t, n.addr, "bob@example.com/desk", "b", sasl.ScramSha256)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range badStanzas {
		if !strings.Contains(tc.stanza, "ceo@") {
			continue
		}
		a := dialRaw(t, n.addr)
		a.login("alice", "example.com", "a", "phone")
		a.write(fmt.Sprintf(tc.stanza, bob.jid))
		a.readUntil("</stream:stream>", 5*time.Second)
		a.conn.Close()
	}
	a := dialRaw(t, n.addr)
	a.login("alice", "example.com", "a", "phone")
	a.write("<message to='" + bob.jid + "' id='ok'><body>honest</body></message>")
	for {
		got := bob.expect("<message")
		var m struct {
			From string `xml:"from,attr"`
			Body string `xml:"body"`
		}
		if err := xml.Unmarshal([]byte(got), &m); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		if m.From != "alice@example.com/phone" {
			t.Fatalf("bob read from=%q in %s", m.From, got)
		}
		if m.Body == "honest" {
			return
		}
	}
}

// TestStreamHeaderEncoding: a stream declared in another encoding than
// UTF-8 gets unsupported-encoding (RFC 6120 §4.9.3.22, §11.6).
func TestStreamHeaderEncoding(t *testing.T) {
	n := startNode(t, nil)
	r := dialRaw(t, n.addr)
	r.write("<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>")
	if got := r.readUntil("</stream:stream>", 5*time.Second); !strings.Contains(got, "<stream:error><unsupported-encoding") {
		t.Fatalf("got %q, want unsupported-encoding", got)
	}
}
