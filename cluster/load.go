package cluster

import (
	"context"
	"runtime"
	"sort"
	"syscall"
	"time"
)

// SetLoad records this node's load; metadata is re-advertised at most every
// 500 ms. It never blocks.
func (c *Cluster) SetLoad(l Load) {
	c.loadMu.Lock()
	c.load = l
	c.loadMu.Unlock()
	select {
	case c.metaKick <- struct{}{}:
	default:
	}
}

func (c *Cluster) metaLoop() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.metaKick:
		}
		if err := c.ml.UpdateNode(time.Second); err != nil {
			c.log.Debug().Err(err).Msg("update node metadata")
		}
		t := time.NewTimer(metaUpdateEvery)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// metaBytes encodes the current metadata and load.
func (c *Cluster) metaBytes() []byte {
	c.loadMu.Lock()
	defer c.loadMu.Unlock()
	return encodeMeta(c.meta, c.load, c.epoch)
}

// Nodes returns all alive members, this node included, sorted by name.
func (c *Cluster) Nodes() []Node {
	members := c.memberList()
	out := make([]Node, 0, len(members))
	for _, m := range members {
		if m.Name == c.cfg.NodeName {
			c.loadMu.Lock()
			out = append(out, Node{NodeMeta: c.meta, Load: c.load, Alive: true})
			c.loadMu.Unlock()
			continue
		}
		meta, load, _, err := decodeMeta(m.Meta)
		if err != nil {
			c.log.Debug().Err(err).Str("peer", m.Name).Msg("skip member with bad metadata")
			continue
		}
		meta.Name = m.Name
		out = append(out, Node{NodeMeta: meta, Load: load, Alive: true})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Self returns this node as Nodes lists it: the metadata and load it
// publishes to the others.
func (c *Cluster) Self() Node {
	c.loadMu.Lock()
	defer c.loadMu.Unlock()
	n := Node{NodeMeta: c.meta, Load: c.load, Alive: true}
	n.Name = c.cfg.NodeName
	return n
}

func leastLoaded(nodes []Node, skip string) (Node, bool) {
	var best Node
	found := false
	for _, n := range nodes {
		if n.Name == skip {
			continue
		}
		if !found || n.Load.Score() < best.Load.Score() {
			best, found = n, true
		}
	}
	return best, found
}

// LeastLoaded returns the alive node with the lowest Load.Score (ties: the
// lowest name).
func (c *Cluster) LeastLoaded() (Node, bool) { return leastLoaded(c.Nodes(), "") }

// ShouldSteer reports whether a new stream should be sent elsewhere: this
// node has at least s.MinSessions sessions, they exceed the cluster
// average by more than s.Margin (0.2 = 20 %), and a node with a lower
// score and fewer sessions exists. It returns that node.
func (c *Cluster) ShouldSteer(s Steering) (Node, bool) {
	if s.MinSessions <= 0 {
		s.MinSessions = DefaultSteerMinSessions
	}
	nodes := c.Nodes()
	if len(nodes) < 2 {
		return Node{}, false
	}
	var self Node
	total := 0
	for _, n := range nodes {
		total += n.Load.Sessions
		if n.Name == c.cfg.NodeName {
			self = n
		}
	}
	if self.Load.Sessions < s.MinSessions {
		return Node{}, false
	}
	avg := float64(total) / float64(len(nodes))
	if float64(self.Load.Sessions) <= avg*(1+s.Margin) {
		return Node{}, false
	}
	t, ok := leastLoaded(nodes, c.cfg.NodeName)
	if !ok || t.Load.Sessions >= self.Load.Sessions || t.Load.Score() >= self.Load.Score() {
		return Node{}, false
	}
	return t, true
}

// LoadSource is what PublishLoad counts this node's load from.
type LoadSource struct {
	Sessions   func() int   // bound client sessions
	Components func() int   // connected component streams
	StanzasIn  func() int64 // stanzas received since start (a counter)
}

// loadEvery is how often PublishLoad samples the load.
const loadEvery = time.Second

// PublishLoad samples this node's load every second and publishes it
// (SetLoad) until ctx ends: sessions, component connections, stanzas/s
// and the CPU share this process used. The caller owns the goroutine it
// runs on.
func (c *Cluster) PublishLoad(ctx context.Context, src LoadSource) {
	c.publishLoad(ctx, src, loadEvery, cpuTime)
}

func (c *Cluster) publishLoad(ctx context.Context, src LoadSource, every time.Duration, cpu func() time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	lastIn, lastCPU, last := src.StanzasIn(), cpu(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			in, used := src.StanzasIn(), cpu()
			dt := now.Sub(last).Seconds()
			l := Load{Sessions: src.Sessions(), Components: src.Components()}
			if dt > 0 {
				l.StanzaRate = float64(in-lastIn) / dt
				l.CPU = min(1, (used-lastCPU).Seconds()/dt/float64(runtime.NumCPU()))
			}
			c.SetLoad(l)
			lastIn, lastCPU, last = in, used, now
		}
	}
}

// cpuTime returns the CPU time this process used (user + system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
