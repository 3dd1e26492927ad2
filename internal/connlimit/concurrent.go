package connlimit

import "sync"

// Concurrent counts exchanges in progress per key (an address, a
// component) so that a key under attack can be held to a few at a time.
// The zero value is ready to use; safe for concurrent use.
type Concurrent struct {
	mu sync.Mutex
	n  map[string]int
}

// Enter counts one more exchange for key and reports true, or reports
// false (and counts nothing) when key already has max in progress.
func (c *Concurrent) Enter(key string, max int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int)
	}
	if c.n[key] >= max {
		return false
	}
	c.n[key]++
	return true
}

// Leave ends one exchange of key that Enter admitted.
func (c *Concurrent) Leave(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key]--; c.n[key] <= 0 {
		delete(c.n, key)
	}
}
