package component_test

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmpptest"
)

// TestComponentPoisonIsRefused: a processor sending a stanza that is not
// well-formed XML 1.0 + Namespaces, or that carries spoofable addressing,
// gets the stream error and nothing reaches the user; the user's stream
// (read with the strict wire.Decoder) stays up.
func TestComponentPoisonIsRefused(t *testing.T) {
	e := startEnv(t, envOpts{quiet: true})
	e.user("bob")
	bob := e.login("bob", "r")
	to := "bob@" + domain + "/r"
	for _, tc := range []struct{ name, stanza, cond string }{
		{"duplicate attribute", "<message from='" + compA + "' to='" + to + "' to='x@" + domain + "'><body>x</body></message>", wire.NotWellFormed},
		{"undeclared prefix", "<message from='" + compA + "' to='" + to + "'><body>x</body><p:x/></message>", wire.NotWellFormed},
		{"surrogate reference", "<message from='" + compA + "' to='" + to + "'><body>&#xDBFF;</body></message>", wire.NotWellFormed},
		{"j:from", "<message from='" + compA + "' to='" + to + "' xmlns:j='urn:x' j:from='ceo@" + domain + "'><body>x</body></message>", wire.InvalidXML},
	} {
		var c *xmpptest.Conn
		testutil.WaitFor(t, wait, "component connection", func() bool { // the previous one may still be going offline
			var err error
			c, err = xmpptest.TryDialComponent(e.comp, compA, secret)
			return err == nil
		})
		if err := c.Send(tc.stanza); err != nil {
			t.Fatal(err)
		}
		if got := streamCond(t, c.Err(wait)); got != tc.cond {
			t.Errorf("%s: condition %q, want %s", tc.name, got, tc.cond)
		}
		c.Close()
	}
	var c *xmpptest.Conn
	testutil.WaitFor(t, wait, "component connection", func() bool {
		var err error
		c, err = xmpptest.TryDialComponent(e.comp, compA, secret)
		return err == nil
	})
	defer c.Close()
	if err := c.Send("<message from='" + compA + "' to='" + to + "'><body>honest</body></message>"); err != nil {
		t.Fatal(err)
	}
	first := bob.Expect(t, wait, isMessage)
	if !strings.Contains(string(first.Raw), "honest") {
		t.Fatalf("bob's first message: %s", first.Raw)
	}
}

// TestSpoofedSenderToComponent: a user cannot make a processor read
// another sender; the processor sees the stamped from only.
func TestSpoofedSenderToComponent(t *testing.T) {
	e := startEnv(t, envOpts{quiet: true})
	e.user("alice")
	c := e.component(compA)
	for _, spoof := range []string{
		"<message to='" + compA + "' xmlns:j='' j:from='ceo@" + domain + "/office'><body>x</body></message>",
		"<message to='" + compA + "' xmlns:j='jabber:component:accept' j:from='ceo@" + domain + "/office'><body>x</body></message>",
	} {
		a := e.login("alice", "phone")
		if err := a.Send(spoof); err != nil {
			t.Fatal(err)
		}
		if err := a.Err(wait); streamCond(t, err) == "" {
			t.Fatal("no stream error")
		}
		a.Close()
	}
	a := e.login("alice", "phone")
	if err := a.Send("<message to='" + compA + "'><body>honest</body></message>"); err != nil {
		t.Fatal(err)
	}
	first := c.Expect(t, wait, isMessage)
	if !strings.Contains(string(first.Raw), "honest") || strings.Contains(string(first.Raw), "ceo@") || first.Get("from") != "alice@"+domain+"/phone" {
		t.Fatalf("processor's first message: %s", first.Raw)
	}
}

// TestComponentStreamEncoding: a component stream declared in another
// encoding than UTF-8 gets unsupported-encoding (RFC 6120 §4.9.3.22).
func TestComponentStreamEncoding(t *testing.T) {
	e := startEnv(t, envOpts{quiet: true})
	nc, err := net.DialTimeout("tcp", e.comp, wait)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(nc, "<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='"+compA+"'>"); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(nc) // the server closes after the stream error
	if !strings.Contains(string(got), "<stream:error><unsupported-encoding") {
		t.Fatalf("got %q, want unsupported-encoding", got)
	}
}
