package embedded

import (
	"strings"
	"sync"
	"time"
)

// leaseBook holds the queue's partition leases and claim counts in memory.
// The file lock makes this process the store's only user, and leases mean
// nothing after a restart, so keeping them out of bbolt saves a write
// transaction (two fsyncs) on every Claim and Release; bbolt's single
// writer is then free for enqueues and acks. Attempts counted here are
// added to the stored count when a row leaves (dead letters, List).
type leaseBook struct {
	mu    sync.Mutex
	comps map[string]*compLeases
}

type compLeases struct {
	bySender map[string]*lease
	attempts map[uint64]int // row id → attempts handed out in this run
}

func (b *leaseBook) comp(name string) *compLeases {
	if b.comps == nil {
		b.comps = make(map[string]*compLeases)
	}
	c := b.comps[name]
	if c == nil {
		c = &compLeases{bySender: make(map[string]*lease), attempts: make(map[uint64]int)}
		b.comps[name] = c
	}
	return c
}

// release drops the leases whose owner matches and reports whether any did.
func (b *leaseBook) release(component string, match func(owner string) bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.comps[component]
	if c == nil {
		return false
	}
	released := false
	for s, l := range c.bySender {
		if match(l.owner) {
			delete(c.bySender, s)
			released = true
		}
	}
	return released
}

// leased counts the live leases of component.
func (b *leaseBook) leased(component string, now time.Time) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int64
	if c := b.comps[component]; c != nil {
		for _, l := range c.bySender {
			if l.expiry > now.UnixNano() {
				n++
			}
		}
	}
	return n
}

// attempts returns a copy of the attempts counted in this run for
// component's rows. Callers take it before opening a bolt transaction:
// the book's lock is never taken inside one, because Claim holds it while
// it opens one (and bbolt's remap lock would close the cycle).
func (b *leaseBook) attempts(component string) map[uint64]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[uint64]int{}
	if c := b.comps[component]; c != nil {
		for id, n := range c.attempts {
			out[id] = n
		}
	}
	return out
}

// forget drops the attempt counts of rows that left the queue.
func (b *leaseBook) forget(component string, ids []uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.comps[component]; c != nil {
		for _, id := range ids {
			delete(c.attempts, id)
		}
	}
}

func hasOwnerPrefix(prefix string) func(string) bool {
	return func(o string) bool { return strings.HasPrefix(o, prefix) }
}
