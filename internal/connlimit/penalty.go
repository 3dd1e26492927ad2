package connlimit

import (
	"context"
	"sync"
	"time"
)

// Penalty counts failed authentications per remote address and says how
// long to delay the next answer to it: the first Free failures within
// Window cost nothing, each further one doubles the delay from 250ms up to
// Max. Its table holds at most MaxEntries addresses (a full table forgets
// an arbitrary one) and forgets an address Window after its last failure.
type Penalty struct {
	Free       int
	Window     time.Duration
	Max        time.Duration
	MaxEntries int

	mu     sync.Mutex
	byAddr map[string]*penaltyEntry
}

type penaltyEntry struct {
	failures int
	last     time.Time
}

// Delay is how long an answer to ip waits now.
func (p *Penalty) Delay(ip string, now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.byAddr[ip]
	if e == nil || now.Sub(e.last) > p.Window {
		return 0
	}
	return p.delay(e.failures)
}

// Fail records a failure of ip and returns the delay of its answer.
func (p *Penalty) Fail(ip string, now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byAddr == nil {
		p.byAddr = make(map[string]*penaltyEntry)
	}
	e := p.byAddr[ip]
	if e == nil {
		if p.MaxEntries > 0 && len(p.byAddr) >= p.MaxEntries {
			for k := range p.byAddr { // map order: an arbitrary entry
				delete(p.byAddr, k)
				break
			}
		}
		e = &penaltyEntry{}
		p.byAddr[ip] = e
	}
	if now.Sub(e.last) > p.Window {
		e.failures = 0
	}
	e.failures++
	e.last = now
	return p.delay(e.failures)
}

func (p *Penalty) delay(failures int) time.Duration {
	if failures <= p.Free {
		return 0
	}
	return min(250*time.Millisecond<<min(failures-p.Free-1, 10), p.Max)
}

// Prune forgets the addresses whose window has passed.
func (p *Penalty) Prune(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ip, e := range p.byAddr {
		if now.Sub(e.last) > p.Window {
			delete(p.byAddr, ip)
		}
	}
}

// Sleep waits d, a penalty delay, unless ctx ends first; it reports whether
// the whole delay passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
