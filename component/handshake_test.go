package component_test

import (
	"errors"
	"strings"
	"testing"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/xmpptest"
)

func streamCond(t *testing.T, err error) string {
	t.Helper()
	var se *xmpptest.StreamError
	if !errors.As(err, &se) {
		t.Fatalf("want a stream error, got %v", err)
	}
	return se.Condition
}

func TestHandshake(t *testing.T) {
	e := startEnv(t, envOpts{specs: []component.Spec{
		{JID: compA, Secret: secret},
		{JID: "multi.example.com", Secret: secret, Multi: true},
	}})
	t.Run("ok", func(t *testing.T) {
		c, err := xmpptest.TryDialComponent(e.comp, compA, secret)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	t.Run("bad-secret", func(t *testing.T) {
		_, err := xmpptest.TryDialComponent(e.comp, compA, "wrong")
		if got := streamCond(t, err); got != "not-authorized" {
			t.Fatalf("condition %q, want not-authorized", got)
		}
	})
	t.Run("unknown-jid", func(t *testing.T) {
		_, err := xmpptest.TryDialComponent(e.comp, "nope.example.com", secret)
		if got := streamCond(t, err); got != "host-unknown" {
			t.Fatalf("condition %q, want host-unknown", got)
		}
	})
	t.Run("conflict", func(t *testing.T) {
		// The connection of "ok" may still be going offline.
		var first *xmpptest.Conn
		testutil.WaitFor(t, wait, "first connection", func() bool {
			c, err := xmpptest.TryDialComponent(e.comp, compA, secret)
			first = c
			return err == nil
		})
		defer first.Close()
		_, err := xmpptest.TryDialComponent(e.comp, compA, secret)
		if got := streamCond(t, err); got != "conflict" {
			t.Fatalf("condition %q, want conflict", got)
		}
		// The first connection is still served.
		e.user("conf")
		u := e.login("conf", "r")
		if err := u.Send("<message to='" + compA + "' id='p1'><body>still there?</body></message>"); err != nil {
			t.Fatal(err)
		}
		first.Expect(t, wait, hasText("still there?"))
		first.Close()
		// Once it is gone, a new one is accepted.
		testutil.WaitFor(t, wait, "reconnect after close", func() bool {
			c, err := xmpptest.TryDialComponent(e.comp, compA, secret)
			if err != nil {
				return false
			}
			c.Close()
			return true
		})
	})
	t.Run("multi", func(t *testing.T) {
		a := e.component("multi.example.com")
		b := e.component("multi.example.com")
		a.Close()
		b.Close()
	})
	t.Run("invalid-from", func(t *testing.T) {
		var c *xmpptest.Conn
		testutil.WaitFor(t, wait, "connection", func() bool {
			var err error
			c, err = xmpptest.TryDialComponent(e.comp, compA, secret)
			return err == nil
		})
		defer c.Close()
		if err := c.Send("<message from='evil.example.com' to='x@" + domain + "'/>"); err != nil {
			t.Fatal(err)
		}
		if got := streamCond(t, c.Err(wait)); got != "invalid-from" {
			t.Fatalf("condition %q, want invalid-from", got)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	cfg := component.DefaultConfig()
	cfg.Components = []component.Spec{
		{JID: "a.example.com", Secret: ""},
		{JID: "user@b.example.com", Secret: "x", MaxRows: -1},
		{JID: "a.example.com", Secret: "x", MaxAge: -1},
	}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"secret is empty", "bare domain", "max_rows", "duplicates", "max_age"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if err := component.DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

// TestSteerComponent: with steering configured, a new processor stream is
// answered with <see-other-host/> naming the lighter node.
func TestSteerComponent(t *testing.T) {
	e := startEnv(t, envOpts{cfg: func(c *component.Config) {
		c.Steer = func() (string, bool) { return "10.0.0.2:5347", true }
	}})
	_, err := xmpptest.TryDialComponent(e.comp, compA, secret)
	se, ok := err.(*xmpptest.StreamError)
	if !ok || se.Condition != "see-other-host" || !strings.Contains(se.Raw, "10.0.0.2:5347") {
		t.Fatalf("err = %v, want see-other-host naming 10.0.0.2:5347", err)
	}
}
