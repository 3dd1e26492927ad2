package cluster

import (
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// events is memberlist's EventDelegate. Callbacks copy the node and queue
// it for the events goroutine; they never block.
type events struct{ c *Cluster }

var _ memberlist.EventDelegate = (*events)(nil)

func copyNode(n *memberlist.Node) memberlist.Node {
	cp := *n
	cp.Addr = append([]byte(nil), n.Addr...)
	cp.Meta = append([]byte(nil), n.Meta...)
	return cp
}

// NotifyJoin records the member and queues a join.
func (e *events) NotifyJoin(n *memberlist.Node) {
	cp := copyNode(n)
	e.c.setMember(cp, true)
	e.c.work.push(workItem{kind: workJoin, node: cp})
}

// NotifyLeave forgets the member and queues a leave (graceful or dead).
func (e *events) NotifyLeave(n *memberlist.Node) {
	cp := copyNode(n)
	e.c.setMember(cp, false)
	e.c.work.push(workItem{kind: workLeave, node: cp})
}

// NotifyUpdate records new metadata and queues an update.
func (e *events) NotifyUpdate(n *memberlist.Node) {
	cp := copyNode(n)
	e.c.setMember(cp, true)
	e.c.work.push(workItem{kind: workUpdate, node: cp})
}

// setMember keeps c.members, our copy of the alive members. memberlist's
// Members() hands out nodes it later mutates without our lock, so we read
// only these copies, taken inside its serialized callbacks.
func (c *Cluster) setMember(n memberlist.Node, alive bool) {
	c.memMu.Lock()
	defer c.memMu.Unlock()
	if h := c.hideMember.Load(); h != nil && *h == n.Name && alive {
		return // test hook: this node has not heard of n yet
	}
	close(c.memChanged) // wake admit calls waiting for a member
	c.memChanged = make(chan struct{})
	if alive {
		c.members[n.Name] = n
	} else {
		delete(c.members, n.Name)
	}
}

func (c *Cluster) member(name string) (memberlist.Node, bool) {
	c.memMu.RLock()
	defer c.memMu.RUnlock()
	n, ok := c.members[name]
	return n, ok
}

// memberOrWait returns member name, or a channel closed at the next
// membership change.
func (c *Cluster) memberOrWait(name string) (memberlist.Node, bool, <-chan struct{}) {
	c.memMu.RLock()
	defer c.memMu.RUnlock()
	n, ok := c.members[name]
	return n, ok, c.memChanged
}

func (c *Cluster) memberList() []memberlist.Node {
	c.memMu.RLock()
	defer c.memMu.RUnlock()
	out := make([]memberlist.Node, 0, len(c.members))
	for _, n := range c.members {
		out = append(out, n)
	}
	return out
}

type workKind int

const (
	workJoin workKind = iota
	workLeave
	workUpdate
	workState
)

type workItem struct {
	kind  workKind
	node  memberlist.Node
	state []byte
}

// workQueue is an unbounded FIFO so that memberlist callbacks never block;
// it holds membership events and push/pull states, both rare.
type workQueue struct {
	mu     sync.Mutex
	items  []workItem
	signal chan struct{}
}

func (q *workQueue) push(it workItem) {
	q.mu.Lock()
	q.items = append(q.items, it)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *workQueue) take() []workItem {
	q.mu.Lock()
	defer q.mu.Unlock()
	it := q.items
	q.items = nil
	return it
}

const (
	pendingTick  = 250 * time.Millisecond
	tombstoneTTL = time.Minute
)

// eventLoop is the goroutine that owns membership reactions, digest checks
// and tombstone expiry.
func (c *Cluster) eventLoop() {
	tick := time.NewTicker(pendingTick)
	defer tick.Stop()
	lastGC := time.Now()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.work.signal:
			for _, it := range c.work.take() {
				c.handleWork(it)
			}
		case now := <-tick.C:
			c.checkPending(now)
			if now.Sub(lastGC) > tombstoneTTL/2 {
				c.dir.gc(now.Add(-tombstoneTTL))
				lastGC = now
			}
		}
	}
}

func (c *Cluster) handleWork(it workItem) {
	if it.kind == workState {
		c.mergeState(it.state)
		return
	}
	n := it.node
	if n.Name == c.cfg.NodeName {
		return
	}
	log := c.log.With().Str("peer", n.Name).Logger()
	switch it.kind {
	case workJoin:
		log.Info().Str("addr", n.Address()).Msg("node joined")
		c.ensureDialer(n.Name)
	case workUpdate:
		log.Debug().Msg("node updated")
		c.ensureDialer(n.Name)
	case workLeave:
		c.stopPeer(n.Name)
		delete(c.pending, n.Name)
		gone := c.dir.dropOwner(n.Name)
		log.Info().Int("sessions", len(gone)).Msg("node left or died; sessions dropped")
		if len(gone) > 0 {
			c.h.Directory.HandleSessionsGone(gone)
		}
	}
}
