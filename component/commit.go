package component

import (
	"context"
	"sync"
	"time"

	"xcollect.dev/xcollect/storage"
)

// Backoff of the committer while the store fails.
const (
	commitBackoffMin = 50 * time.Millisecond
	commitBackoffMax = 5 * time.Second
	// commitTimeout bounds one Enqueue call.
	commitTimeout = 30 * time.Second
)

type pendingItem struct {
	item storage.QueueItem
	done func(storage.EnqueueResult, error)
}

// committer is the single goroutine that group-commits submitted items.
// Submitters append to pending under mu and wake it; it takes up to
// CommitMaxBatch items, commits them with one Enqueue (retrying while the
// store fails), and calls their done callbacks outside the lock.
type committer struct {
	m *Manager

	mu         sync.Mutex // guards pending, committing, stopping
	pending    []pendingItem
	committing int // items taken by the running commit, still in the backlog
	stopping   bool

	wake    chan struct{} // one slot: work arrived or stop requested
	abortCh chan struct{} // closed by abort
	once    sync.Once
}

func (c *committer) init(m *Manager) {
	c.m = m
	c.wake = make(chan struct{}, 1)
	c.abortCh = make(chan struct{})
}

func (c *committer) notify() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// submit queues one item, or fails it at once when the backlog is full or
// the committer stopped.
func (c *committer) submit(item storage.QueueItem, done func(storage.EnqueueResult, error)) {
	c.mu.Lock()
	switch {
	case c.stopping:
		c.mu.Unlock()
		done(0, ErrShutdown)
		return
	case len(c.pending)+c.committing >= c.m.cfg.Backlog:
		c.mu.Unlock()
		done(0, ErrBacklogFull)
		return
	}
	c.pending = append(c.pending, pendingItem{item: item, done: done})
	c.mu.Unlock()
	c.notify()
}

// stop makes run return once everything pending is committed.
func (c *committer) stop() {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	c.notify()
}

// abort makes run fail what is left with ErrShutdown and return.
func (c *committer) abort() {
	c.once.Do(func() { close(c.abortCh) })
}

// run is the committer goroutine.
func (c *committer) run() {
	log := c.m.log.With().Str("part", "committer").Logger()
	q := c.m.store.Queue()
	down := false
	var downSince time.Time
	for {
		c.mu.Lock()
		for len(c.pending) == 0 {
			if c.stopping {
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			select {
			case <-c.wake:
			case <-c.abortCh:
				return
			}
			c.mu.Lock()
		}
		n := min(len(c.pending), c.m.cfg.CommitMaxBatch)
		batch := c.pending[:n:n]
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil // let the old array go
		}
		c.committing = n
		c.mu.Unlock()

		items := make([]storage.QueueItem, n)
		for i := range batch {
			items[i] = batch[i].item
		}
		var res []storage.EnqueueResult
		backoff := commitBackoffMin
		for {
			ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
			r, err := q.Enqueue(ctx, items, c.m.limits)
			cancel()
			if err == nil && len(r) == len(items) {
				res = r
				break
			}
			if err == nil {
				err = errShortResult
			}
			if !down {
				down, downSince = true, time.Now()
				log.Error().Err(err).Int("batch", n).Msg("queue store is failing: holding submitted stanzas in memory and retrying")
			}
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-c.abortCh:
				t.Stop()
				c.failAll(batch)
				return
			}
			backoff = min(backoff*2, commitBackoffMax)
		}
		if down {
			down = false
			log.Warn().Dur("outage", time.Since(downSince)).Msg("queue store recovered")
		}
		c.mu.Lock()
		c.committing = 0
		c.mu.Unlock()
		for i := range batch {
			batch[i].done(res[i], nil)
		}
	}
}

// failAll fails batch and everything pending with ErrShutdown.
func (c *committer) failAll(batch []pendingItem) {
	c.mu.Lock()
	rest := c.pending
	c.pending = nil
	c.committing = 0
	c.stopping = true
	c.mu.Unlock()
	for _, p := range batch {
		p.done(0, ErrShutdown)
	}
	for _, p := range rest {
		p.done(0, ErrShutdown)
	}
}
