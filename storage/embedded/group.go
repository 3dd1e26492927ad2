package embedded

import (
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// writeGroup commits concurrent write transactions together: one bbolt
// commit (its page writes and two fdatasyncs) for everything that arrived
// while the previous commit ran. Without it the committer's Enqueue and
// every delivery loop's Ack each paid their own commit, one after the
// other behind bbolt's writer lock, so a report waited for up to two
// foreign commits before its own.
//
// It starts no goroutine: the first caller to find no commit running
// leads. The leader takes every waiting request, runs their functions in
// order in one transaction and commits; then it hands the lead to the
// oldest request that arrived meanwhile (or drops it) and returns. A
// caller therefore waits for at most the commit in progress plus the one
// that carries its own function.
//
// Functions must be safe to run more than once, as with bolt's own Batch:
// when one of a group fails, the transaction is rolled back and every
// function of the group runs again alone in its own transaction, so that
// an expected error (storage.ErrExists, ErrLimit …) reaches only its own
// caller and the others' writes are kept.
type writeGroup struct {
	mu      sync.Mutex
	waiting []*writeRequest
	leading bool // a caller is running a group commit
}

type writeRequest struct {
	fn   func(*bolt.Tx) error
	err  error
	lead bool          // set before done is closed: the request leads the next group
	done chan struct{} // closed when err is final, or when the request is to lead
}

// update runs fn in a write transaction shared with concurrent callers and
// returns fn's error or the commit's.
func (g *writeGroup) update(db *bolt.DB, fn func(*bolt.Tx) error) error {
	r := &writeRequest{fn: fn, done: make(chan struct{})}
	g.mu.Lock()
	g.waiting = append(g.waiting, r)
	if g.leading {
		g.mu.Unlock()
		<-r.done
		if !r.lead {
			return r.err
		}
		// Handed the lead: r is the first of g.waiting.
	} else {
		g.leading = true
		g.mu.Unlock()
	}
	g.mu.Lock()
	group := g.waiting
	g.waiting = nil
	g.mu.Unlock()
	defer g.handOff()
	commit(db, group, r)
	return r.err
}

// handOff passes the lead to the oldest waiting request, or ends it.
func (g *writeGroup) handOff() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.waiting) == 0 {
		g.leading = false
		return
	}
	next := g.waiting[0]
	next.lead = true
	close(next.done)
}

// commit runs the group's functions in one transaction, or each in its own
// when one of them fails, and completes every request but leader's (its
// caller is the one running commit). A panic in a function fails the
// others' requests before it goes on up the leader's stack.
func commit(db *bolt.DB, group []*writeRequest, leader *writeRequest) {
	finished := false
	defer func() {
		if !finished {
			p := recover()
			for _, r := range group {
				if r != leader {
					r.err = fmt.Errorf("a write transaction of the same group panicked: %v", p)
					close(r.done)
				}
			}
			panic(p)
		}
	}()
	if len(group) > 1 {
		err := db.Update(func(tx *bolt.Tx) error {
			for _, r := range group {
				if err := r.fn(tx); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			// Alone, each gets its own result; the failure may have been
			// one function's expected error.
			for _, r := range group {
				r.err = db.Update(r.fn)
			}
		}
	} else {
		group[0].err = db.Update(group[0].fn)
	}
	finished = true
	for _, r := range group {
		if r != leader {
			close(r.done)
		}
	}
}
