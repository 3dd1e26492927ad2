package server_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/server"
)

// authOnly logs a raw client in without binding (for <resume/>).
func (r *raw) authOnly(user, domain, pass string) {
	r.t.Helper()
	r.loginUntilBind(user, domain, pass)
}

func TestStreamManagementResume(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.RequireTLS = false })
	n.addUser(t, "alice@example.com", "a")
	n.addUser(t, "bob@example.com", "b")
	r1 := dialRaw(t, n.addr)
	r1.login("alice", "example.com", "a", "phone")
	r1.write("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
	got := r1.readUntil("/>", 5*time.Second)
	if !strings.Contains(got, "<enabled") || !strings.Contains(got, "resume='true'") {
		t.Fatalf("enable: %s", got)
	}
	m := regexp.MustCompile(`id="([^"]+)"`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("no id in %s", got)
	}
	id := m[1]
	// two stanzas from alice are handled (bob is offline: offline storage)
	r1.write("<message to='bob@example.com' id='a1'><body>one</body></message><message to='bob@example.com' id='a2'><body>two</body></message><r xmlns='urn:xmpp:sm:3'/>")
	if got := r1.readUntil("h='2'", 5*time.Second); !strings.Contains(got, "<a xmlns='urn:xmpp:sm:3' h='2'/>") {
		t.Fatalf("ack: %s", got)
	}
	bob := dialRaw(t, n.addr)
	bob.login("bob", "example.com", "b", "desk")
	for _, b := range []string{"m1", "m2", "m3"} {
		bob.write("<message to='alice@example.com/phone' id='" + b + "'><body>" + b + "</body></message>")
	}
	r1.readUntil("m3", 5*time.Second)
	r1.conn.Close() // the connection drops without </stream:stream>
	time.Sleep(100 * time.Millisecond)
	bob.write("<message to='alice@example.com/phone' id='m4'><body>m4</body></message>")

	r2 := dialRaw(t, n.addr)
	r2.authOnly("alice", "example.com", "a")
	r2.write("<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='1'/>")
	got = r2.readUntil("m4", 5*time.Second)
	if !strings.Contains(got, "<resumed") || !strings.Contains(got, "h='2'") {
		t.Fatalf("resume: %s", got)
	}
	if strings.Contains(got, ">m1<") || !strings.Contains(got, ">m2<") || !strings.Contains(got, ">m3<") {
		t.Fatalf("redelivery after h=1 must be m2, m3, m4: %s", got)
	}
	// the resumed stream works
	r2.write("<iq type='get' id='p' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
	r2.readUntil("id=\"p\"", 5*time.Second)
	// a clean close ends the session; a later resume fails and says h
	// (two messages before the drop and the ping after the resume)
	r2.write("</stream:stream>")
	r2.readUntil("</stream:stream>", 5*time.Second)
	r3 := dialRaw(t, n.addr)
	r3.authOnly("alice", "example.com", "a")
	r3.write("<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='4'/>")
	if got := r3.readUntil("</failed>", 5*time.Second); !strings.Contains(got, "<failed xmlns='urn:xmpp:sm:3' h='3'>") {
		t.Fatalf("resume after end: %s", got)
	}
	// unknown id: failed without h, then binding works
	r3.write("<resume xmlns='urn:xmpp:sm:3' previd='nope' h='0'/>")
	if got := r3.readUntil("</failed>", 5*time.Second); !strings.Contains(got, "item-not-found") || strings.Contains(got, "h=") {
		t.Fatalf("unknown resume: %s", got)
	}
}

func TestStreamManagementAckIsBadH(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.RequireTLS = false })
	n.addUser(t, "alice@example.com", "a")
	r := dialRaw(t, n.addr)
	r.login("alice", "example.com", "a", "x")
	r.write("<enable xmlns='urn:xmpp:sm:3'/>")
	r.readUntil("/>", 5*time.Second)
	r.write("<a xmlns='urn:xmpp:sm:3' h='7'/>")
	if got := r.readUntil("</stream:stream>", 5*time.Second); !strings.Contains(got, "undefined-condition") {
		t.Fatalf("acking unsent stanzas: %s", got)
	}
}

// TestShutdownKeepsUnackedMessages: stanzas a detached session holds
// unacknowledged go to offline storage when the node shuts down.
func TestShutdownKeepsUnackedMessages(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.RequireTLS = false })
	n.addUser(t, "alice@example.com", "a")
	n.addUser(t, "bob@example.com", "b")
	r := dialRaw(t, n.addr)
	r.login("alice", "example.com", "a", "phone")
	r.write("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
	r.readUntil("/>", 5*time.Second)
	bob := dialRaw(t, n.addr)
	bob.login("bob", "example.com", "b", "desk")
	bob.write("<message to='alice@example.com/phone' id='k1'><body>keep me 1</body></message><message to='alice@example.com/phone' id='k2'><body>keep me 2</body></message>")
	r.readUntil("keep me 2", 5*time.Second)
	r.conn.Close() // unacked, detached
	time.Sleep(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	msgs, err := n.store.Offline().FetchOffline(ctx, "alice@example.com", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 {
		t.Fatalf("offline after shutdown: %d messages, want the 2 unacked", len(msgs))
	}
}
