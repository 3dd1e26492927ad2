package server

import (
	"fmt"
	"testing"
	"time"
)

func testGuard(max int) *authGuard {
	g := &authGuard{}
	cfg := DefaultConfig().Auth
	cfg.MaxEntries = max
	g.init(cfg)
	return g
}

// The lockout of an account doubles with each further lockout up to
// MaxAccountLockout, from any address, and failures while locked do not
// extend it.
func TestAccountLockoutGrows(t *testing.T) {
	g := testGuard(100)
	now := time.Unix(1_000_000, 0)
	lockFor := func() time.Duration {
		t.Helper()
		for i := 0; i < g.cfg.AccountFailures; i++ {
			if g.locked("a@x", now) {
				t.Fatalf("locked after %d failures", i)
			}
			g.fail(fmt.Sprintf("10.0.0.%d", i), "a@x", now)
		}
		if !g.locked("a@x", now) {
			t.Fatal("not locked after AccountFailures failures")
		}
		g.fail("10.9.9.9", "a@x", now) // while locked: does not extend
		d := g.accounts["a@x"].lockedUntil.Sub(now)
		now = now.Add(d + time.Second)
		if g.locked("a@x", now) {
			t.Fatal("still locked after the lockout")
		}
		return d
	}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute, 32 * time.Minute, time.Hour, time.Hour}
	for i, w := range want {
		if d := lockFor(); d != w {
			t.Fatalf("lockout %d lasted %v; want %v", i+1, d, w)
		}
	}
	g.succeed("a@x") // a success clears the count, not the history
	if g.accounts["a@x"].lockouts != len(want) {
		t.Fatal("success forgot the lockout history")
	}
}

// The tables stay bounded by MaxEntries under many addresses and
// accounts, and prune forgets what expired.
func TestAuthGuardTablesBounded(t *testing.T) {
	g := testGuard(50)
	now := time.Unix(1_000_000, 0)
	for i := 0; i < 10_000; i++ {
		g.fail(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), fmt.Sprintf("u%d@x", i), now)
	}
	if len(g.addrs) > 50 || len(g.accounts) > 50 {
		t.Fatalf("tables hold %d addresses and %d accounts; want at most 50 each", len(g.addrs), len(g.accounts))
	}
	g.prune(now.Add(g.cfg.AccountWindow + 2*g.cfg.MaxAccountLockout + time.Minute))
	if len(g.addrs) != 0 || len(g.accounts) != 0 {
		t.Fatalf("after expiry: %d addresses, %d accounts", len(g.addrs), len(g.accounts))
	}
	// An address with an exchange in progress is kept.
	if !g.begin("10.1.1.1", now) {
		t.Fatal("begin refused without failures")
	}
	g.prune(now.Add(time.Hour))
	if g.addrs["10.1.1.1"] == nil {
		t.Fatal("prune dropped an address with an exchange in progress")
	}
}

// The fake SCRAM parameters are stable per account and secret and differ
// between accounts and secrets.
func TestFakeSCRAMStable(t *testing.T) {
	s1, k1, i1 := fakeSCRAM([]byte("secret"), mechSCRAMSHA256, "a@x")
	s2, k2, _ := fakeSCRAM([]byte("secret"), mechSCRAMSHA256, "a@x")
	s3, _, _ := fakeSCRAM([]byte("secret"), mechSCRAMSHA256, "b@x")
	s4, _, _ := fakeSCRAM([]byte("other"), mechSCRAMSHA256, "a@x")
	_, k5, _ := fakeSCRAM([]byte("secret"), mechSCRAMSHA1, "a@x")
	if string(s1) != string(s2) || string(k1) != string(k2) || string(s1) == string(s3) || string(s1) == string(s4) {
		t.Fatal("fake salt not stable per (secret, account)")
	}
	if len(s1) != 16 || len(k1) != 32 || len(k5) != 20 || i1 <= 0 {
		t.Fatalf("salt %d bytes, keys %d/%d bytes, i=%d", len(s1), len(k1), len(k5), i1)
	}
}
