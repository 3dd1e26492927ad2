package e2e

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/testutil"
)

// TestCrashKeepsAckedReports is issue 3: a node on the embedded store is
// SIGKILLed at random moments under load and restarted on the same data
// directory and ports. Every report whose <a h/> a reporter received must
// reach the processor at least once.
func TestCrashKeepsAckedReports(t *testing.T) {
	const (
		reporters  = 5
		maxReports = 3000 // per reporter
		kills      = 5
	)
	testStart := time.Now()
	n := newNode(t, nodeOptions{})
	n.addUsers(reporters)
	n.start()
	l := startLoad(t, n, reporters, maxReports)

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("kill schedule seed %d", seed)
	last := 0
	for i := 1; i <= kills; i++ {
		// Kill under load: wait until acks flow on this incarnation.
		if !testutil.Poll(20*time.Second, func() bool { return l.acked() > last }) {
			t.Fatalf("kill %d: no new acks within 20s after the (re)start; %v\n%s", i, l.totals(), n.logTail())
		}
		delay := 200*time.Millisecond + time.Duration(rng.Int64N(int64(600*time.Millisecond)))
		<-time.After(delay) // the random moment of the crash, not a synchronisation
		n.kill()
		last = l.acked()
		t.Logf("kill %d after %v of load: %d acked so far", i, delay, last)
		n.start()
	}
	if !testutil.Poll(20*time.Second, func() bool { return l.acked() > last }) {
		t.Fatalf("no acks after the last restart; %v\n%s", l.totals(), n.logTail())
	}
	l.stopReporters(finalAckWait + 5*time.Second)
	drainStart := time.Now()
	// The restarted node dropped the dead process's leases (embedded
	// store at open, ReleasePrefix at start), so the drain is quick; the
	// bound stays generous for a loaded CI machine.
	lost := l.drain(20 * time.Second)
	drained := time.Since(drainStart)
	t.Logf("final drain took %v", drained.Round(time.Millisecond))
	if drained > 10*time.Second {
		t.Errorf("delivery stalled %v after the last restart: the dead process's leases were not released", drained.Round(time.Millisecond))
	}
	tot := l.totals()
	t.Logf("totals after %d kills in %v: %v", kills, time.Since(testStart).Round(time.Millisecond), tot)
	t.Logf("acked-but-lost: %d", len(lost))
	if len(lost) > 0 {
		show := lost
		if len(show) > 20 {
			show = show[:20]
		}
		t.Errorf("%d acked reports never reached the processor, e.g. %s", len(lost), strings.Join(show, " "))
	}
}
