package server_test

import (
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/sasl"

	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/server"
)

func TestLoginMechanisms(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "secret")
	for _, m := range []sasl.Mechanism{sasl.ScramSha256, sasl.ScramSha1, sasl.Plain} {
		t.Run(m.Name, func(t *testing.T) {
			c, err := dialMellium(t, n.addr, "alice@example.com/"+m.Name, "secret", m)
			if err != nil {
				t.Fatalf("login: %v", err)
			}
			c.send("<iq type='get' id='p1' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
			c.expect(`id="p1"`, `type="result"`)
		})
	}
}

func TestDirectTLS(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "secret")
	conn, err := tls.Dial("tcp", n.tls, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(header("example.com"))); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got strings.Builder
	for !strings.Contains(got.String(), "</stream:features>") {
		k, err := conn.Read(buf)
		got.Write(buf[:k])
		if err != nil {
			t.Fatalf("read: %v (%q)", err, got.String())
		}
	}
	if s := got.String(); !strings.Contains(s, "<mechanism>PLAIN</mechanism>") || strings.Contains(s, "starttls") || strings.Contains(s, "PLUS") {
		t.Fatalf("features over direct TLS = %s", s)
	}
}

func TestBadPassword(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "secret")
	for _, m := range []sasl.Mechanism{sasl.ScramSha256, sasl.Plain} {
		_, err := dialMellium(t, n.addr, "alice@example.com/x", "wrong", m)
		if err == nil || !strings.Contains(err.Error(), "not-authorized") {
			t.Fatalf("%s with a wrong password: err = %v, want not-authorized", m.Name, err)
		}
	}
	if _, err := dialMellium(t, n.addr, "nobody@example.com/x", "secret", sasl.ScramSha1); err == nil {
		t.Fatal("unknown user logged in")
	}
}

func TestRepeatedFailuresAreSlowedDown(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.Auth.FreeFailures = 2 })
	n.addUser(t, "alice@example.com", "secret")
	var last time.Duration
	for i := 0; i < 4; i++ {
		start := time.Now()
		_, _ = dialMellium(t, n.addr, "alice@example.com/x", "wrong", sasl.Plain)
		last = time.Since(start)
	}
	if last < 400*time.Millisecond {
		t.Fatalf("4th failure answered in %v; want a delay of at least 500ms", last)
	}
	// A good login from the same address still works.
	if _, err := dialMellium(t, n.addr, "alice@example.com/ok", "secret", sasl.ScramSha256); err != nil {
		t.Fatal(err)
	}
}

func TestChatAndBareJIDRouting(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "a")
	n.addUser(t, "bob@example.com", "b")
	a, err := dialMellium(t, n.addr, "alice@example.com/phone", "a", sasl.ScramSha256)
	if err != nil {
		t.Fatal(err)
	}
	b1, err := dialMellium(t, n.addr, "bob@example.com/desk", "b", sasl.ScramSha256)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := dialMellium(t, n.addr, "bob@example.com/laptop", "b", sasl.ScramSha256)
	if err != nil {
		t.Fatal(err)
	}
	b1.send("<presence><priority>5</priority></presence>")
	b2.send("<presence><priority>1</priority></presence>")
	a.send("<presence/>")
	// Each of bob's resources sees the other's presence: both priorities
	// are in effect before anything is routed to the bare JID.
	b1.expect("<presence", `from="`+b2.jid+`"`)
	b2.expect("<presence", `from="`+b1.jid+`"`)
	// full JID → that resource
	a.send("<message to='" + b2.jid + "' type='chat' id='m1'><body>to laptop</body></message>")
	got := b2.expect("to laptop")
	if !strings.Contains(got, `from="`+a.jid+`"`) {
		t.Fatalf("from not stamped: %s", got)
	}
	// bare JID → highest priority resource only (RFC 6121 §8.5.2.1.1)
	testutil.WaitFor(t, 10*time.Second, "a message to the bare JID at the highest-priority resource", func() bool {
		a.send("<message to='bob@example.com' type='chat' id='m2'><body>to bare</body></message>")
		select {
		case got := <-b1.in:
			return strings.Contains(got, "to bare")
		case <-time.After(200 * time.Millisecond):
			return false
		}
	})
	b2.expectNone(300*time.Millisecond, "to bare")
	// a spoofed from is overwritten
	a.send("<message to='" + b1.jid + "' from='mallory@example.com' id='m3'><body>spoof</body></message>")
	if got := b1.expect("spoof"); strings.Contains(got, "mallory") {
		t.Fatalf("spoofed from kept: %s", got)
	}
	// other domain: isolated accounts
	a.send("<message to='bob@other.org' id='m4'><body>x</body></message>")
	a.expect(`id="m4"`, "service-unavailable")
	// unknown domain: no federation
	a.send("<message to='bob@elsewhere.net' id='m5'><body>x</body></message>")
	a.expect(`id="m5"`, "remote-server-not-found")
}

func TestRosterAndPresence(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "a")
	n.addUser(t, "bob@example.com", "b")
	a, err := dialMellium(t, n.addr, "alice@example.com/a", "a", sasl.ScramSha256)
	if err != nil {
		t.Fatal(err)
	}
	b, err := dialMellium(t, n.addr, "bob@example.com/b", "b", sasl.ScramSha256)
	if err != nil {
		t.Fatal(err)
	}
	a.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
	a.expect(`id="r1"`, `type="result"`)
	b.send("<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>")
	b.expect(`id="r2"`, `type="result"`)
	a.send("<presence/>")
	b.send("<presence/>")
	// roster set + push
	a.send("<iq type='set' id='r3'><query xmlns='jabber:iq:roster'><item jid='bob@example.com' name='Bob'><group>Friends</group></item></query></iq>")
	a.expect(`id="r3"`, `type="result"`)
	a.expect(`jabber:iq:roster`, `bob@example.com`, `Friends`)
	// subscribe → bob gets the request
	a.send("<presence to='bob@example.com' type='subscribe'/>")
	a.expect(`ask="subscribe"`)
	b.expect(`type="subscribe"`, `from="alice@example.com"`)
	// bob approves → alice gets subscribed and bob's presence
	b.send("<presence to='alice@example.com' type='subscribed'/>")
	a.expect(`subscription="to"`) // the roster push comes first (RFC 6121 §3.1.6)
	a.expect(`type="subscribed"`, `from="bob@example.com"`)
	a.expect("<presence", `from="`+b.jid+`"`)
	// bob's presence change reaches alice
	b.send("<presence><show>away</show><status>lunch</status></presence>")
	a.expect("lunch", "away")
	// roster get shows the item
	a.send("<iq type='get' id='r4'><query xmlns='jabber:iq:roster'/></iq>")
	a.expect(`id="r4"`, `subscription="to"`, `name="Bob"`)
	// bob goes offline → unavailable
	b.send("<presence type='unavailable'/>")
	a.expect(`type="unavailable"`, `from="`+b.jid+`"`)
	// alice cancels her subscription
	a.send("<presence to='bob@example.com' type='unsubscribe'/>")
	a.expect(`subscription="none"`)
	// remove the contact
	a.send("<iq type='set' id='r5'><query xmlns='jabber:iq:roster'><item jid='bob@example.com' subscription='remove'/></query></iq>")
	a.expect(`id="r5"`, `type="result"`)
}

func TestProbeOnLoginAndUnavailableOnDisconnect(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "a")
	n.addUser(t, "bob@example.com", "b")
	a, _ := dialMellium(t, n.addr, "alice@example.com/a", "a", sasl.ScramSha256)
	b, _ := dialMellium(t, n.addr, "bob@example.com/b", "b", sasl.ScramSha256)
	a.send("<presence/>")
	b.send("<presence/>")
	a.send("<presence to='bob@example.com' type='subscribe'/>")
	b.expect(`type="subscribe"`)
	b.send("<presence to='alice@example.com' type='subscribed'/>")
	b.send("<presence to='alice@example.com' type='subscribe'/>")
	a.expect(`type="subscribe"`, `from="bob@example.com"`)
	a.send("<presence to='bob@example.com' type='subscribed'/>")
	b.expect("<presence", `from="`+a.jid+`"`)
	// a second resource of alice logs in and learns bob's presence by probe
	a2, err := dialMellium(t, n.addr, "alice@example.com/second", "a", sasl.ScramSha256)
	if err != nil {
		t.Fatal(err)
	}
	a2.send("<presence/>")
	a2.expect("<presence", `from="`+b.jid+`"`)
	// bob's connection drops without unavailable → alice gets unavailable
	b.s.Close()
	a.expect(`type="unavailable"`, `from="`+b.jid+`"`)
}

func TestOfflineMessages(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.OfflineLimit = 2 })
	n.addUser(t, "alice@example.com", "a")
	n.addUser(t, "bob@example.com", "b")
	a, _ := dialMellium(t, n.addr, "alice@example.com/a", "a", sasl.ScramSha256)
	a.send("<message to='bob@example.com' id='o1' type='chat'><body>while you were out 1</body></message>")
	a.send("<message to='bob@example.com/gone' id='o2'><body>while you were out 2</body></message>")
	a.send("<message to='bob@example.com' id='o3'><body>over the limit</body></message>")
	a.expect(`id="o3"`, "service-unavailable")
	a.send("<iq to='bob@example.com/gone' type='get' id='iq1'><ping xmlns='urn:xmpp:ping'/></iq>")
	a.expect(`id="iq1"`, "service-unavailable")
	b, err := dialMellium(t, n.addr, "bob@example.com/b", "b", sasl.ScramSha256)
	if err != nil {
		t.Fatal(err)
	}
	b.send("<presence/>")
	b.expect("while you were out 1", `from="`+a.jid+`"`)
	b.expect("while you were out 2")
	// delivered once: a new session gets nothing
	b2, _ := dialMellium(t, n.addr, "bob@example.com/c", "b", sasl.ScramSha256)
	b2.send("<presence/>")
	b2.expectNone(300*time.Millisecond, "while you were out")
}

func TestPingDiscoVersion(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "a")
	a, _ := dialMellium(t, n.addr, "alice@example.com/a", "a", sasl.ScramSha256)
	a.send("<iq type='get' id='d1' to='example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
	got := a.expect(`id="d1"`)
	for _, f := range []string{"urn:xmpp:ping", "jabber:iq:version", "urn:xmpp:sm:3", `category="server"`} {
		if !strings.Contains(got, f) {
			t.Errorf("disco#info lacks %s: %s", f, got)
		}
	}
	a.send("<iq type='get' id='d2' to='example.com'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
	a.expect(`id="d2"`, `type="result"`)
	a.send("<iq type='get' id='v1' to='example.com'><query xmlns='jabber:iq:version'/></iq>")
	a.expect(`id="v1"`, "xcollect")
	a.send("<iq type='get' id='u1' to='example.com'><query xmlns='urn:example:unknown'/></iq>")
	a.expect(`id="u1"`, "service-unavailable")
	a.send("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
	a.expect(`id="s1"`, `type="result"`)
}

func TestResourceConflict(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.RequireTLS = false })
	n.addUser(t, "alice@example.com", "a")
	first := dialRaw(t, n.addr)
	first.login("alice", "example.com", "a", "same")
	second := dialRaw(t, n.addr)
	second.login("alice", "example.com", "a", "same")
	if got := first.readUntil("</stream:stream>", 5*time.Second); !strings.Contains(got, "<stream:error><conflict") {
		t.Fatalf("old session got %q, want a conflict stream error", got)
	}
	// the new session works
	second.write("<iq type='get' id='p' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
	if got := second.readUntil("</iq>", 5*time.Second); !strings.Contains(got, "result") {
		t.Fatalf("new session: %q", got)
	}
}

func TestServerGeneratesResource(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.RequireTLS = false })
	r := dialRaw(t, n.addr)
	r.write(header("example.com"))
	got := r.readUntil("</stream:features>", 5*time.Second)
	if !strings.Contains(got, "SCRAM-SHA-256") || strings.Contains(got, "PLAIN") {
		t.Fatalf("plaintext features must offer SCRAM but not PLAIN: %s", got)
	}
}

func TestStreamErrors(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.NegotiationTimeout = 500 * time.Millisecond })
	for _, tc := range []struct {
		name, send, want string
	}{
		{"not-well-formed", header("example.com") + "<message><body></message>", "not-well-formed"},
		{"wrong namespace", "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>", "invalid-namespace"},
		{"wrong stream namespace", "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='example.com' version='1.0'>", "invalid-namespace"},
		{"unknown host", header("nowhere.example"), "host-unknown"},
		{"stanza before auth", header("example.com") + "<message to='a@example.com'><body>x</body></message>", "not-authorized"},
		{"restricted xml", header("example.com") + "<!DOCTYPE foo>", "restricted-xml"},
		{"unauthenticated timeout", header("example.com"), "connection-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, n.addr)
			r.write(tc.send)
			got := r.readUntil("</stream:stream>", 5*time.Second)
			if !strings.Contains(got, "<stream:error><"+tc.want) {
				t.Fatalf("got %q, want stream error %s", got, tc.want)
			}
		})
	}
}

func TestStanzaTooLarge(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.MaxStanzaBytes = 8192 })
	n.addUser(t, "alice@example.com", "a")
	a, _ := dialMellium(t, n.addr, "alice@example.com/a", "a", sasl.ScramSha256)
	big := "<message to='alice@example.com'><body>" + strings.Repeat("x", 20000) + "</body></message>"
	a.send(big)
	select {
	case err := <-a.done:
		if err == nil || !strings.Contains(err.Error(), "policy-violation") {
			t.Fatalf("err = %v, want policy-violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("session not closed")
	}
}

func TestIdlePingAndTimeout(t *testing.T) {
	n := startNode(t, func(c *server.Config) {
		c.IdleTimeout = 300 * time.Millisecond
		c.PingTimeout = 300 * time.Millisecond
	})
	n.addUser(t, "alice@example.com", "a")
	// A client that answers (mellium replies to unknown IQs) stays up.
	a, _ := dialMellium(t, n.addr, "alice@example.com/a", "a", sasl.ScramSha256)
	a.expect("urn:xmpp:ping")
	time.Sleep(time.Second)
	a.send("<iq type='get' id='alive' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
	a.expect(`id="alive"`)
	// A bound client that stays silent is pinged, then closed.
	n2 := startNode(t, func(c *server.Config) {
		c.RequireTLS = false
		c.IdleTimeout = 300 * time.Millisecond
		c.PingTimeout = 300 * time.Millisecond
	})
	n2.addUser(t, "alice@example.com", "a")
	r := dialRaw(t, n2.addr)
	r.login("alice", "example.com", "a", "silent")
	got := r.readUntil("</stream:stream>", 5*time.Second)
	if !strings.Contains(got, "urn:xmpp:ping") || !strings.Contains(got, "connection-timeout") {
		t.Fatalf("silent session got %q, want a ping then connection-timeout", got)
	}
}

// TestMalformedFloodDoesNotHurtOthers sends garbage on many connections
// while two users keep chatting.
func TestMalformedFloodDoesNotHurtOthers(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "a")
	n.addUser(t, "bob@example.com", "b")
	a, _ := dialMellium(t, n.addr, "alice@example.com/a", "a", sasl.ScramSha256)
	b, _ := dialMellium(t, n.addr, "bob@example.com/b", "b", sasl.ScramSha256)
	b.send("<presence/>")
	garbage := []string{
		"\x00\x01\x02\xff\xfe",
		header("example.com") + "<<<>>>",
		header("example.com") + "<message><a><b></a></message>",
		"<stream:stream xmlns:stream='x'>" + strings.Repeat("<a>", 10000),
		header("example.com") + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\x16\x03\x01garbage",
		strings.Repeat("A", 300000),
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := net.DialTimeout("tcp", n.addr, time.Second)
				if err != nil {
					continue
				}
				_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
				_, _ = conn.Write([]byte(garbage[(w+i)%len(garbage)]))
				buf := make([]byte, 1024)
				_, _ = conn.Read(buf)
				conn.Close()
			}
		}(w)
	}
	for i := 0; i < 50; i++ {
		id := "c" + string(rune('A'+i%26)) + strings.Repeat("x", i%3)
		a.send("<message to='bob@example.com/b' id='" + id + "'><body>still here " + id + "</body></message>")
		b.expect("still here " + id)
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-a.done:
		t.Fatalf("alice's session ended: %v", err)
	default:
	}
}

func TestWhitespaceKeepaliveAndDomainIsolation(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.RequireTLS = false })
	n.addUser(t, "alice@example.com", "a")
	r := dialRaw(t, n.addr)
	r.login("alice", "example.com", "a", "ka")
	r.write(" \n \t ")
	r.write("<iq type='get' id='after-ws' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
	if got := r.readUntil("after-ws", 5*time.Second); !strings.Contains(got, "result") {
		t.Fatalf("after whitespace keepalive: %q", got)
	}
	// alice@example.com's password does not open alice@other.org
	o := dialRaw(t, n.addr)
	o.write(header("other.org"))
	o.readUntil("</stream:features>", 5*time.Second)
	// The unknown account gets a (fake) challenge like a real one; the
	// proof then fails.
	neg := sasl.NewClient(sasl.ScramSha1, sasl.Credentials(func() ([]byte, []byte, []byte) { return []byte("alice"), []byte("a"), nil }))
	_, first, err := neg.Step(nil)
	if err != nil {
		t.Fatal(err)
	}
	o.write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>" + b64(first) + "</auth>")
	_, final, err := neg.Step(unb64(t, between(o.readUntil("</challenge>", 5*time.Second), ">", "</challenge>")))
	if err != nil {
		t.Fatal(err)
	}
	o.write("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + b64(final) + "</response>")
	if got := o.readUntil("</failure>", 5*time.Second); !strings.Contains(got, "not-authorized") {
		t.Fatalf("cross-domain login: %q", got)
	}
}

// TestConflictKeepsPresenceAndStopsOldSession: a session replaced by a new
// one for the same full JID stops routing at once, and contacts get no
// unavailable presence for the resource that is still alive.
func TestConflictKeepsPresenceAndStopsOldSession(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.RequireTLS = false })
	n.addUser(t, "alice@example.com", "a")
	n.addUser(t, "bob@example.com", "b")
	b, _ := dialMellium(t, n.addr, "bob@example.com/b", "b", sasl.ScramSha256)
	b.send("<presence/>")
	old := dialRaw(t, n.addr)
	old.login("alice", "example.com", "a", "phone")
	old.write("<presence/>")
	// bob subscribes to alice's presence
	b.send("<presence to='alice@example.com' type='subscribe'/>")
	old.readUntil("type='subscribe'", 5*time.Second)
	old.write("<presence to='bob@example.com' type='subscribed'/>")
	b.expect(`type="subscribed"`)
	b.expect("<presence", `from="alice@example.com/phone"`)
	// the same resource logs in again; the old one keeps its TCP open
	fresh := dialRaw(t, n.addr)
	fresh.login("alice", "example.com", "a", "phone")
	fresh.write("<presence/>")
	old.readUntil("conflict", 5*time.Second)
	old.write("<message to='bob@example.com' id='late'><body>from the replaced session</body></message>")
	b.expectNone(500*time.Millisecond, "from the replaced session")
	b.expectNone(2500*time.Millisecond, `type="unavailable"`)
}

// TestDeniedRequestLeavesNoRosterItem: a subscription request the contact
// denies never shows up in the contact's roster (RFC 6121 §3.2).
func TestDeniedRequestLeavesNoRosterItem(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "a")
	n.addUser(t, "bob@example.com", "b")
	a, _ := dialMellium(t, n.addr, "alice@example.com/a", "a", sasl.ScramSha256)
	b, _ := dialMellium(t, n.addr, "bob@example.com/b", "b", sasl.ScramSha256)
	a.send("<presence/>")
	b.send("<presence/>")
	a.send("<presence to='bob@example.com' type='subscribe'/>")
	b.expect(`type="subscribe"`)
	b.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
	if got := b.expect(`id="r1"`); strings.Contains(got, "alice@example.com") {
		t.Fatalf("a pending request shows in the roster: %s", got)
	}
	b.send("<presence to='alice@example.com' type='unsubscribed'/>")
	a.expect(`type="unsubscribed"`)
	b.send("<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>")
	if got := b.expect(`id="r2"`); strings.Contains(got, "alice@example.com") {
		t.Fatalf("a denied request left a roster item: %s", got)
	}
}
