package interop_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"xcollect.dev/xcollect/component"
)

// TestSlixmppComponentOverTLS: a slixmpp component connects to the
// component_tls listener (TLS from the first byte, the node's self-signed
// certificate) and receives a user's report.
func TestSlixmppComponentOverTLS(t *testing.T) {
	needSlixmpp(t)
	n := startNode(t, options{users: users(), components: []component.Spec{{JID: compJID, Secret: compPass}}, componentTLS: true})
	alice := dialGo(t, n.c2s, "alice@"+domain+"/go", alicePass)
	_, port, _ := strings.Cut(n.compTLS, ":")
	p := startProc(t, "", nil, systemPython, filepath.Join("testdata", "slixmpp_component_tls.py"), "127.0.0.1", port, compJID, compPass, "1")
	p.await("component online over TLS", is("event", "online"))
	alice.send(fmt.Sprintf("<message to='%s' type='normal' id='tls1'><body>over tls</body></message>", compJID))
	p.await("report over TLS", is("event", "message", "from", alice.jid, "to", compJID, "id", "tls1", "body", "over tls"))
	p.await("done", is("event", "done"))
	if e, ok := p.find(is("event", "error")); ok {
		t.Fatalf("slixmpp component: %v", e)
	}
}

// TestSlixmppLockedAccount: after five wrong passwords slixmpp's next
// login to the account, with the right password, gets not-authorized with
// a text it can show the user.
func TestSlixmppLockedAccount(t *testing.T) {
	needSlixmpp(t)
	n := startNode(t, options{users: users()})
	args := []string{filepath.Join("testdata", "slixmpp_auth.py"), "127.0.0.1", n.port(), "alice@" + domain}
	args = append(args, "wrong1", "wrong2", "wrong3", "wrong4", "wrong5", alicePass)
	p := startProc(t, "", nil, systemPython, args...)
	p.await("done", is("event", "done"))
	var got []event
	for _, e := range p.all() {
		if e.str("event") != "done" {
			got = append(got, e)
		}
	}
	if len(got) != 6 {
		t.Fatalf("attempts: %v", got)
	}
	for i, e := range got[:4] {
		if e.str("event") != "failure" || e.str("condition") != "not-authorized" || e.str("text") != "" {
			t.Fatalf("wrong password %d: %v; want not-authorized without a text", i+1, e)
		}
	}
	for i, e := range got[4:] {
		if e.str("event") != "failure" || e.str("condition") != "not-authorized" || !strings.Contains(e.str("text"), "try again later") {
			t.Fatalf("attempt %d (account locked): %v; want not-authorized with the lockout text", i+5, e)
		}
	}
}
