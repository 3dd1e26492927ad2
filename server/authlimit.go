package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"sync"
	"time"

	"xcollect.dev/xcollect/storage"
)

// authGuard slows down password guessing. It keeps two bounded tables:
//
//   - per remote address: failures within the window and the SASL
//     exchanges in progress. Once an address has more than FreeFailures
//     failures, every answer to it (success too) waits a delay that doubles
//     with each further failure up to MaxDelay, and at most MaxConcurrent
//     exchanges may run at once, so parallel connections do not multiply
//     the rate. (Exchanges are counted always, capped only in penalty.)
//   - per account (bare JID, existing or not, so that the table tells
//     nothing about existence): failures from any address. AccountFailures
//     failures within AccountWindow lock the account for AccountLockout,
//     doubling with each further lockout up to MaxAccountLockout. Another
//     source address does not reset it.
//
// Both tables hold at most MaxEntries keys; entries expire after their
// window (pruneLoop), and a full table evicts an arbitrary idle entry.
type authGuard struct {
	cfg      AuthLimits
	mu       sync.Mutex
	addrs    map[string]*addrEntry
	accounts map[string]*accountEntry
}

// AuthLimits configures authGuard; zero fields take the defaults of
// DefaultConfig.
type AuthLimits struct {
	// FreeFailures is how many failures of one address within Window are
	// answered at once. Default 3.
	FreeFailures int
	// Window is the memory of an address's failures. Default 5m.
	Window time.Duration
	// MaxDelay bounds the delay of one answer. Default 5s.
	MaxDelay time.Duration
	// MaxConcurrent is the number of SASL exchanges one address in penalty
	// may run at once; more are refused with temporary-auth-failure.
	// Default 3.
	MaxConcurrent int
	// AccountFailures failed logins of one account within AccountWindow
	// lock it. Default 5 (like Prosody's mod_limit_auth and ejabberd's
	// mod_fail2ban order of magnitude).
	AccountFailures int
	// AccountWindow is the memory of an account's failures. Default 15m.
	AccountWindow time.Duration
	// AccountLockout is the first lockout; each further one doubles.
	// Default 1m.
	AccountLockout time.Duration
	// MaxAccountLockout bounds the lockout. Default 1h.
	MaxAccountLockout time.Duration
	// MaxEntries bounds each table. Default 100000.
	MaxEntries int
}

type addrEntry struct {
	failures int
	last     time.Time
	active   int // SASL exchanges in progress
}

type accountEntry struct {
	failures    int
	last        time.Time
	lockedUntil time.Time
	lockouts    int // lockouts so far: the next one lasts AccountLockout << lockouts
}

func (g *authGuard) init(cfg AuthLimits) {
	g.cfg = cfg
	g.addrs = make(map[string]*addrEntry)
	g.accounts = make(map[string]*accountEntry)
}

// begin starts a SASL exchange of ip; false when ip already runs
// MaxConcurrent of them. A true return must be matched by one end(ip).
func (g *authGuard) begin(ip string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.addr(ip, now)
	// Only an address in penalty is capped: many devices behind one NAT
	// address may log in at once, and a guesser is in penalty after
	// FreeFailures failures.
	inPenalty := now.Sub(e.last) <= g.cfg.Window && g.penalty(e.failures) > 0
	if inPenalty && e.active >= g.cfg.MaxConcurrent {
		return false
	}
	e.active++
	return true
}

// end ends a SASL exchange that begin admitted.
func (g *authGuard) end(ip string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.addrs[ip]; e != nil && e.active > 0 {
		e.active--
	}
}

// delay is how long any answer to ip waits now.
func (g *authGuard) delay(ip string, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.addrs[ip]
	if e == nil || now.Sub(e.last) > g.cfg.Window {
		return 0
	}
	return g.penalty(e.failures)
}

func (g *authGuard) penalty(failures int) time.Duration {
	if failures <= g.cfg.FreeFailures {
		return 0
	}
	d := 250 * time.Millisecond << min(failures-g.cfg.FreeFailures-1, 10)
	return min(d, g.cfg.MaxDelay)
}

// fail records a failure of ip against account ("" when no account was
// named) and returns how long to wait before answering it. A failure while
// the account is locked does not extend the lock.
func (g *authGuard) fail(ip, account string, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.addr(ip, now)
	if now.Sub(e.last) > g.cfg.Window {
		e.failures = 0
	}
	e.failures++
	e.last = now
	if account != "" {
		a := g.account(account, now)
		if now.Before(a.lockedUntil) {
			return g.penalty(e.failures)
		}
		if now.Sub(a.last) > g.cfg.AccountWindow {
			a.failures = 0
		}
		a.failures++
		a.last = now
		if a.failures >= g.cfg.AccountFailures {
			a.lockedUntil = now.Add(min(g.cfg.AccountLockout<<min(a.lockouts, 20), g.cfg.MaxAccountLockout))
			a.lockouts++
			a.failures = 0
		}
	}
	return g.penalty(e.failures)
}

// locked reports whether account is locked out now.
func (g *authGuard) locked(account string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.accounts[account]
	return a != nil && now.Before(a.lockedUntil)
}

// succeed clears the account's failure count (not its lockout history,
// nor the address's failures: a login to one account must not buy an
// address more guesses at others).
func (g *authGuard) succeed(account string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if a := g.accounts[account]; a != nil {
		a.failures = 0
	}
}

// addr returns ip's entry, creating it. Called with g.mu held.
func (g *authGuard) addr(ip string, now time.Time) *addrEntry {
	e := g.addrs[ip]
	if e == nil {
		if len(g.addrs) >= g.cfg.MaxEntries {
			for k, v := range g.addrs { // map order: an arbitrary entry
				if v.active == 0 {
					delete(g.addrs, k)
					break
				}
			}
		}
		e = &addrEntry{last: now}
		g.addrs[ip] = e
	}
	return e
}

// account returns account's entry, creating it. Called with g.mu held.
func (g *authGuard) account(account string, now time.Time) *accountEntry {
	a := g.accounts[account]
	if a == nil {
		if len(g.accounts) >= g.cfg.MaxEntries {
			for k := range g.accounts {
				delete(g.accounts, k)
				break
			}
		}
		a = &accountEntry{last: now}
		g.accounts[account] = a
	}
	return a
}

// prune forgets entries whose window and lockout have passed. An account
// that was locked is remembered for 2×MaxAccountLockout after its lock, so
// its next lockout is longer.
func (g *authGuard) prune(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for ip, e := range g.addrs {
		if e.active == 0 && now.Sub(e.last) > g.cfg.Window {
			delete(g.addrs, ip)
		}
	}
	for k, a := range g.accounts {
		if now.Sub(a.last) > g.cfg.AccountWindow && now.Sub(a.lockedUntil) > 2*g.cfg.MaxAccountLockout {
			delete(g.accounts, k)
		}
	}
}

// pruneLoop returns the loop that forgets old entries.
func (g *authGuard) pruneLoop(ctx context.Context) func() {
	return func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				g.prune(now)
			}
		}
	}
}

// fakeSCRAM returns stable SCRAM parameters for an account that does not
// exist, derived from secret and the account, so that repeated probes see
// the same salt and iteration count as for a real account. The salted
// password is secret too: no proof can match it.
func fakeSCRAM(secret []byte, mech, account string) (salt, saltedPassword []byte, iterations int64) {
	mac := func(label string) []byte {
		h := hmac.New(sha256.New, secret)
		h.Write([]byte(label + "\x00" + mech + "\x00" + account))
		return h.Sum(nil)
	}
	salt = mac("salt")[:16] // storage.NewCredentials uses 16-byte salts
	saltedPassword = mac("key")
	if mech == mechSCRAMSHA1 {
		saltedPassword = saltedPassword[:sha1.Size]
	}
	return salt, saltedPassword, storage.DefaultIterations
}
