package e2e

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/internal/testutil"
)

// Log messages of component/commit.go the outage test counts.
const (
	msgStoreFailing   = "queue store is failing: holding submitted stanzas in memory and retrying"
	msgStoreRecovered = "queue store recovered"
)

// TestPostgresOutageKeepsSessions is issue 4: Postgres (durable mode) is
// stopped for ~3 s under load and started again. Client sessions stay up,
// acks pause while the database is down and resume after, and every acked
// report reaches the processor. The committer logs the outage once and the
// recovery once.
func TestPostgresOutageKeepsSessions(t *testing.T) {
	const (
		reporters  = 5
		maxReports = 3000
		outage     = 3 * time.Second
	)
	testStart := time.Now()
	pg := pgtest.StartOptions(t, pgtest.Options{Durable: true})
	n := newNode(t, nodeOptions{DSN: pg.CreateDatabase(t)})
	n.addUsers(reporters)
	n.start()
	l := startLoad(t, n, reporters, maxReports)

	if !testutil.Poll(20*time.Second, func() bool { return l.acked() >= 200 }) {
		t.Fatalf("load did not start: %v\n%s", l.totals(), n.logTail())
	}
	before := l.totals()
	stopAt := time.Now()
	if err := pg.Stop(); err != nil {
		t.Fatalf("stop postgres: %v", err)
	}
	t.Logf("postgres stopped (took %v); acked %d", time.Since(stopAt).Round(time.Millisecond), before.acked)
	// First half: items committed just before the stop may still be acked.
	<-time.After(outage / 2) // the outage itself, not a synchronisation
	mid := l.acked()
	<-time.After(outage / 2)
	end := l.acked()
	t.Logf("acks during the outage: first half +%d, second half +%d", mid-before.acked, end-mid)
	if end != mid {
		t.Errorf("acks arrived while Postgres was down: %d at mid-outage, %d at its end", mid, end)
	}
	if err := pg.Start(); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	restarted := time.Now()
	if !testutil.Poll(30*time.Second, func() bool { return l.acked() > end }) {
		t.Fatalf("acks did not resume within 30s after Postgres restarted; %v\n%s", l.totals(), n.logTail())
	}
	t.Logf("acks resumed %v after Postgres restarted", time.Since(restarted).Round(time.Millisecond))
	resumed := l.acked()
	if !testutil.Poll(20*time.Second, func() bool { return l.acked() >= resumed+200 }) {
		t.Fatalf("load did not continue after the outage; %v", l.totals())
	}
	l.stopReporters(finalAckWait + 5*time.Second)
	lost := l.drain(20 * time.Second)
	tot := l.totals()
	t.Logf("totals in %v: %v", time.Since(testStart).Round(time.Millisecond), tot)
	t.Logf("acked-but-lost: %d", len(lost))
	if len(lost) > 0 {
		show := lost
		if len(show) > 20 {
			show = show[:20]
		}
		t.Errorf("%d acked reports never reached the processor, e.g. %s", len(lost), strings.Join(show, " "))
	}
	// Sessions were kept: one login per reporter, one processor connection.
	for _, r := range l.reporters {
		r.mu.Lock()
		sessions, lastErr := r.sessions, r.lastErr
		r.mu.Unlock()
		if sessions != 1 {
			t.Errorf("reporter %d: %d c2s sessions, want 1 (the outage closed it: %v)", r.idx, sessions, lastErr)
		}
	}
	l.proc.mu.Lock()
	procSessions, procErr := l.proc.sessions, l.proc.lastErr
	l.proc.mu.Unlock()
	if procSessions != 1 {
		t.Errorf("processor: %d component connections, want 1 (the outage closed it: %v)", procSessions, procErr)
	}
	if !n.running() {
		t.Errorf("node exited during the outage\n%s", n.logTail())
	}
	if tot.bounced != 0 {
		t.Errorf("%d reports bounced during the outage, want 0 (held in memory and retried)", tot.bounced)
	}
	trouble := strings.Split(grepLog(n, `"level":"warn"`)+"\n"+grepLog(n, `"level":"error"`), "\n")
	t.Logf("node warn/error lines: %d, the first ones:\n%s", len(trouble), strings.Join(trouble[:min(len(trouble), 12)], "\n"))
	failing, recovered := n.countLog(msgStoreFailing), n.countLog(msgStoreRecovered)
	t.Logf("node log: %q ×%d, %q ×%d", msgStoreFailing, failing, msgStoreRecovered, recovered)
	if failing != 1 || recovered != 1 {
		t.Errorf("outage logged %d times and recovery %d times, want once each\n%s", failing, recovered, grepLog(n, "committer"))
	}
}

// grepLog returns the node's log lines containing s.
func grepLog(n *node, s string) string {
	var out []string
	for _, l := range n.logLines() {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestPostgresDownAtStartup: a node whose database does not answer waits
// storage.postgres.startup_timeout, then exits non-zero saying why.
func TestPostgresDownAtStartup(t *testing.T) {
	closed := testutil.FreeAddr(t) // nothing listens there
	if c, err := net.DialTimeout("tcp", closed, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s unexpectedly accepts connections", closed)
	}
	n := newNode(t, nodeOptions{
		DSN:            fmt.Sprintf("postgres://xcollect@%s/xcollect?sslmode=disable", closed),
		StartupTimeout: "2s",
	})
	start := time.Now()
	out, err := n.run(30*time.Second, "serve")
	took := time.Since(start)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("xcollect serve with the database down: err %v, want a non-zero exit\n%s", err, out)
	}
	t.Logf("exit code %d after %v", exit.ExitCode(), took.Round(time.Millisecond))
	if took < 2*time.Second || took > 15*time.Second {
		t.Errorf("gave up after %v, want about startup_timeout (2s)", took)
	}
	last := strings.TrimSpace(out)
	if i := strings.LastIndex(last, "\n"); i >= 0 {
		last = last[i+1:]
	}
	if !strings.HasPrefix(last, "xcollect: ") || !strings.Contains(last, "database not reachable after") {
		t.Errorf("last line %q does not say the database is not reachable\n%s", last, out)
	}
	if w := strings.Count(out, "postgres not reachable yet; retrying"); w < 1 {
		t.Errorf("no 'retrying' line while waiting\n%s", out)
	}
}
