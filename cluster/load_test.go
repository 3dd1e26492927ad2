package cluster

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/testutil"
)

// TestPublishLoad: the sampled load carries the counts of its source, the
// stanza rate between two samples and the CPU share, capped at one.
func TestPublishLoad(t *testing.T) {
	c, err := New(Config{NodeName: "a", Local: true, BindAddr: "127.0.0.1", SecretKey: testKey}, newRec().all())
	if err != nil {
		t.Fatal(err)
	}
	var in atomic.Int64
	var cpu atomic.Int64 // nanoseconds
	src := LoadSource{
		Sessions:   func() int { return 7 },
		Components: func() int { return 2 },
		StanzasIn:  func() int64 { return in.Add(50) }, // 50 more per sample
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.publishLoad(ctx, src, 20*time.Millisecond, func() time.Duration {
			return time.Duration(cpu.Add(int64(time.Hour))) // far more than the wall time: capped
		})
	}()
	testutil.WaitFor(t, 5*time.Second, "a published load", func() bool {
		c.loadMu.Lock()
		defer c.loadMu.Unlock()
		return c.load.Sessions != 0
	})
	cancel()
	<-done
	c.loadMu.Lock()
	l := c.load
	c.loadMu.Unlock()
	if l.Sessions != 7 || l.Components != 2 {
		t.Fatalf("counts: %+v", l)
	}
	if l.StanzaRate <= 0 || l.CPU != 1 {
		t.Fatalf("rate and CPU: %+v, want a positive rate and CPU capped at 1", l)
	}
	if cpuTime() <= 0 {
		t.Fatal("cpuTime of a running process is not positive")
	}
}

// TestSelfAgreesWithNodes: /v1/status shows Self next to Nodes; the same
// node must not show two loads (it showed score 0 as self).
func TestSelfAgreesWithNodes(t *testing.T) {
	a := startNode(t, "node-a", nil)
	a.SetLoad(Load{Sessions: 40, Components: 1, StanzaRate: 12, CPU: 0.3})
	self := a.Self()
	if self.Name != "node-a" || self.Load.Score() == 0 {
		t.Fatalf("Self = %+v (score %v)", self, self.Load.Score())
	}
	for _, n := range a.Nodes() {
		if n.Name == "node-a" {
			if n.NodeMeta != self.NodeMeta || n.Load != self.Load {
				t.Fatalf("Nodes lists %+v, Self says %+v", n, self)
			}
			return
		}
	}
	t.Fatalf("node-a not in its own Nodes: %+v", a.Nodes())
}

// TestJoined: a node without seeds is joined (the first node); one whose
// seed does not answer is not, until a join reaches it.
func TestJoined(t *testing.T) {
	first := startNode(t, "node-a", nil)
	if !first.Joined() {
		t.Fatal("a node without seeds is not joined")
	}
	// A seed nobody listens on.
	lonely := startNode(t, "node-b", nil, "127.0.0.1:1")
	if lonely.Joined() {
		t.Fatal("a node whose only seed is unreachable counts as joined")
	}
	second := startNode(t, "node-c", nil, first.gossipAddr())
	if !second.Joined() {
		t.Fatal("a node that reached its seed is not joined")
	}
}
