package interop_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/testutil"
)

const (
	alicePass = "alice-secret"
	bobPass   = "bob-secret"
	compJID   = "collector." + domain
	compPass  = "component-secret"
)

func users() map[string]string {
	return map[string]string{"alice@" + domain: alicePass, "bob@" + domain: bobPass}
}

// TestClients runs each interop client against its own fresh node.
func TestClients(t *testing.T) {
	t.Run("slixmpp", testSlixmpp)
	t.Run("xmpp-client", testXMPPClient)
	t.Run("go-sendxmpp", testGoSendxmpp)
	t.Run("xmpp-component", testXMPPComponent)
}

// testSlixmpp: STARTTLS with a self-signed certificate, SCRAM-SHA-1 (alice)
// and SCRAM-SHA-256 (bob), roster get, mutual subscription with
// auto-approval, presence both ways, a chat echoed back, XEP-0198 acks.
func testSlixmpp(t *testing.T) {
	needSlixmpp(t)
	n := startNode(t, options{users: users()})
	p := startProc(t, "", nil, systemPython, filepath.Join("testdata", "slixmpp_pair.py"), "127.0.0.1", n.port(), domain, alicePass, bobPass)
	p.wait()
	if e, ok := p.find(is("event", "error")); ok {
		t.Fatalf("slixmpp: %v", e)
	}
	alice, bob := "alice@"+domain+"/slix", "bob@"+domain+"/slix"
	for who, mech := range map[string]string{"alice": "SCRAM-SHA-1", "bob": "SCRAM-SHA-256"} {
		p.await(who+" STARTTLS", is("who", who, "event", "starttls"))
		if e := p.await(who+" SASL", is("who", who, "event", "sasl")); e.str("mech") != mech {
			t.Errorf("%s authenticated with %s, want %s", who, e.str("mech"), mech)
		}
		if e := p.await(who+" roster", is("who", who, "event", "roster")); e.str("type") != "result" {
			t.Errorf("%s roster get: %v", who, e)
		}
	}
	for who, jid := range map[string]string{"alice": alice, "bob": bob} {
		if e := p.await(who+" session", is("who", who, "event", "session")); e.str("jid") != jid {
			t.Errorf("%s bound %q, want %q", who, e.str("jid"), jid)
		}
	}
	p.await("subscribe at bob from alice", is("who", "bob", "event", "subscribe", "from", "alice@"+domain))
	p.await("subscribed at alice from bob", is("who", "alice", "event", "subscribed", "from", "bob@"+domain))
	p.await("presence at alice from bob", is("who", "alice", "event", "presence", "from", bob))
	p.await("presence at bob from alice", is("who", "bob", "event", "presence", "from", alice))
	if e := p.await("alice roster state", is("who", "alice", "event", "roster_state")); e.str("bob") != "both" {
		t.Errorf("alice's roster item for bob: subscription %q, want both", e.str("bob"))
	}
	if e := p.await("bob roster state", is("who", "bob", "event", "roster_state")); e.str("alice") != "both" {
		t.Errorf("bob's roster item for alice: subscription %q, want both", e.str("alice"))
	}
	// alice wrote to bob's bare JID: bob sees it so (RFC 6121 §8.5.2).
	p.await("chat at bob", is("who", "bob", "event", "message", "from", alice, "to", "bob@"+domain, "type", "chat", "body", "hello from slixmpp"))
	p.await("echo at alice", is("who", "alice", "event", "message", "from", bob, "to", alice, "type", "chat", "body", "echo: hello from slixmpp"))
	p.await("XEP-0198 enabled", is("who", "alice", "event", "sm_enabled"))
	e := p.await("XEP-0198 ack", is("who", "alice", "event", "sm_ack"))
	h, sent := e["h"].(float64), e["sent"].(float64)
	if h < 1 || h != sent {
		t.Errorf("XEP-0198: server acked h=%v, alice sent %v stanzas", h, sent)
	}
	p.await("done", is("event", "done"))
}

// testXMPPClient: @xmpp/client with STARTTLS and SCRAM-SHA-1, presence
// between subscribed users, a chat echoed back.
func testXMPPClient(t *testing.T) {
	needNodePackages(t, "@xmpp/client")
	n := startNode(t, options{users: users()})
	p := startProc(t, "node", []string{"NODE_TLS_REJECT_UNAUTHORIZED=0", "XMPP_TRACE=1"}, "node", "client.js", "127.0.0.1", n.port(), domain, alicePass, bobPass)
	p.wait()
	if e, ok := p.find(is("event", "error")); ok {
		t.Fatalf("@xmpp/client: %v", e)
	}
	alice, bob := "alice@"+domain+"/node", "bob@"+domain+"/node"
	for who, jid := range map[string]string{"alice": alice, "bob": bob} {
		p.await(who+" STARTTLS", is("who", who, "event", "starttls"))
		if e := p.await(who+" SASL", is("who", who, "event", "sasl")); e.str("mech") != "SCRAM-SHA-1" {
			t.Errorf("%s authenticated with %q, want SCRAM-SHA-1", who, e.str("mech"))
		}
		if e := p.await(who+" online", is("who", who, "event", "online")); e.str("jid") != jid {
			t.Errorf("%s bound %q, want %q", who, e.str("jid"), jid)
		}
	}
	p.await("presence at alice from bob", is("who", "alice", "event", "presence", "from", bob))
	p.await("presence at bob from alice", is("who", "bob", "event", "presence", "from", alice))
	p.await("chat at bob", is("who", "bob", "event", "message", "from", alice, "type", "chat", "body", "hello from @xmpp/client"))
	p.await("echo at alice", is("who", "alice", "event", "message", "from", bob, "type", "chat", "body", "echo: hello from @xmpp/client"))
	p.await("done", is("event", "done"))
}

// testGoSendxmpp: go-sendxmpp logs in as alice over STARTTLS and sends a
// message to bob, a Go client.
func testGoSendxmpp(t *testing.T) {
	bin := needTool(t, "go-sendxmpp")
	n := startNode(t, options{users: users()})
	bob := dialGo(t, n.c2s, "bob@"+domain+"/go", bobPass)
	bob.send("<presence/>")
	bob.ping("p1")
	body := "hello from go-sendxmpp"
	p := startProc(t, "", []string{"HOME=" + n.dir},
		bin, "-u", "alice@"+domain, "-p", alicePass, "-j", n.c2s, "-n", "--timeout", "10",
		"-m", writeFile(t, n.dir, "msg.txt", body+"\n"), "bob@"+domain)
	p.wait()
	got := bob.expect(">" + body + "</body>")
	if !strings.Contains(got, `from="alice@`+domain+`/`) || !strings.Contains(got, `to="bob@`+domain) || !strings.Contains(got, `type="chat"`) {
		t.Fatalf("bob got %s, want a chat message from alice@%s/…", got, domain)
	}
}

// testXMPPComponent: an @xmpp/component processor with a wrong secret is
// refused; with the right one it authenticates; a message a client sends while the component is offline is
// delivered when it connects (store and forward), and one sent while it is
// online arrives too.
func testXMPPComponent(t *testing.T) {
	needNodePackages(t, "@xmpp/component")
	n := startNode(t, options{users: users(), components: []component.Spec{{JID: compJID, Secret: compPass}}})
	alice := dialGo(t, n.c2s, "alice@"+domain+"/go", alicePass)
	alice.send("<presence/>")

	// Offline: queued durably.
	alice.send(fmt.Sprintf("<message to='%s' type='normal' id='q1'><body>queued while offline</body></message>", compJID))
	alice.ping("p1")
	testutil.WaitFor(t, waitTimeout, "queued row for "+compJID, func() bool { return n.queuedRows(t, compJID) == 1 })

	_, port, _ := strings.Cut(n.comp, ":")
	bad := startProc(t, "node", []string{"XMPP_TRACE=1"}, "node", "component.js", "127.0.0.1", port, compJID, "wrong-secret", "1")
	bad.await("handshake refused", func(e event) bool {
		return (e.str("event") == "error" || e.str("event") == "client_error") && strings.Contains(e.str("error"), "not-authorized")
	})
	if e, ok := bad.find(is("event", "online")); ok {
		t.Fatalf("component with a wrong secret went online: %v", e)
	}
	bad.cancel()

	p := startProc(t, "node", []string{"XMPP_TRACE=1"}, "node", "component.js", "127.0.0.1", port, compJID, compPass, "2")
	p.await("component online", is("event", "online", "jid", compJID))
	p.await("queued message", is("event", "message", "from", alice.jid, "to", compJID, "id", "q1", "body", "queued while offline"))

	// Online: delivered directly.
	alice.send(fmt.Sprintf("<message to='%s' type='normal' id='l1'><body>sent while online</body></message>", compJID))
	p.await("live message", is("event", "message", "from", alice.jid, "to", compJID, "id", "l1", "body", "sent while online"))
	p.wait()
	var ids []string
	for _, e := range p.all() {
		if e.str("event") == "message" {
			ids = append(ids, e.str("id"))
		}
	}
	if !slices.Equal(ids, []string{"q1", "l1"}) {
		t.Fatalf("component received ids %v, want [q1 l1] once each in order", ids)
	}
	testutil.WaitFor(t, waitTimeout, "empty queue after delivery", func() bool { return n.queuedRows(t, compJID) == 0 })
}
