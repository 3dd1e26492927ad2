package clustertest

import (
	"strings"
	"sync"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/xmpptest"
)

// TestProcessorNodeKilled: the node of one of two processors that share a
// queue is SIGKILLed under load. The sender partitions it had leased move
// to the processor on another node once the lease expires
// (cluster.queue_lease) — not before: that would break per-sender order —
// and every report a device got an ack for reaches one of the processors.
func TestProcessorNodeKilled(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.DSN()
	const lease = 3 * time.Second
	nodes := startClusterOn(t, dsn, "1000", []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, nil, clusterOpts{lease: lease})
	devs := newDevices(t, dsn, 6)
	procA := xmpptest.DialComponent(t, nodes[0].comp, "collector.example.com", "s3cret")
	procB := xmpptest.DialComponent(t, nodes[2].comp, "collector.example.com", "s3cret")
	for _, p := range []*xmpptest.Conn{procA, procB} {
		if err := p.EnableSM(false); err != nil {
			t.Fatal(err)
		}
	}
	// The processor on node1 never acknowledges: the partitions node1
	// claimed for it stay leased to node1 (renewed while it lives).
	procA.SetAutoAck(false)
	colA, colB := collect(t, procA), collect(t, procB)

	until := time.Now().Add(12 * time.Second)
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func(d *device) {
			defer wg.Done()
			d.run(t, []string{nodes[1].c2s}, until, 20000) // node2 survives; bounded by until
		}(d)
	}
	senderOf := func(id string) string { return id[2:strings.LastIndexByte(id, '-')] } // k-<user>-<n>
	sendersOf := func(c *collector) map[string]bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		s := map[string]bool{}
		for id := range c.got {
			s[senderOf(id)] = true
		}
		return s
	}
	testutil.WaitFor(t, 10*time.Second, "reports at the processor on node1", func() bool { return len(sendersOf(colA)) > 0 })
	time.Sleep(time.Second)
	onA := sendersOf(colA)
	killed := time.Now()
	if err := nodes[0].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// The partitions node1 held reach the processor on node3.
	var takeover time.Duration
	testutil.WaitFor(t, lease+10*time.Second, "node1's partitions at the processor on node3", func() bool {
		colB.mu.Lock()
		defer colB.mu.Unlock()
		takeover = 0
		for s := range onA {
			var first time.Time
			for id, at := range colB.first {
				if senderOf(id) == s && at.After(killed) && (first.IsZero() || at.Before(first)) {
					first = at
				}
			}
			if first.IsZero() {
				return false
			}
			takeover = max(takeover, first.Sub(killed))
		}
		return true
	})
	t.Logf("%d sender partitions of the dead node delivered on node3 %v after the SIGKILL (lease %v)",
		len(onA), takeover.Round(10*time.Millisecond), lease)
	if takeover < lease/3 {
		t.Fatalf("node1's partitions moved after %v, before their lease (%v) could have expired", takeover, lease)
	}
	wg.Wait()

	t.Logf("acked %d, acked-but-lost 0", waitAckedDelivered(t, 20*time.Second, devs, colA, colB))
}
