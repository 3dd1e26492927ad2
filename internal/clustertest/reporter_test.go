package clustertest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/clients/reporter"
	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/xmpptest"
)

// TestReporterResumesAfterNodeDeath: the reporter SDK, sending reports
// one after another, loses its node to a SIGKILL; it reconnects to another
// node and resumes its stream there from the standby's copy (not a fresh
// bind), every Report call returns nil, and every report reaches the
// processor.
func TestReporterResumesAfterNodeDeath(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.DSN()
	nodes := startCluster(t, dsn, "1000")
	addUsers(t, dsn, "field1")
	proc := xmpptest.DialComponent(t, nodes[1].comp, "collector.example.com", "s3cret")
	if err := proc.EnableSM(false); err != nil {
		t.Fatal(err)
	}
	col := collect(t, proc)

	var logs testutil.SyncBuffer
	var d net.Dialer
	r, err := reporter.New(reporter.Config{
		Addr: nodes[0].c2s, JID: "field1@example.com", Password: "pw",
		InsecureSkipVerify: true, AllowPlaintext: true,
		Logger:     zerolog.New(&logs),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		// The device's list of nodes: node1, then node3.
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			if c, err := d.DialContext(ctx, "tcp", nodes[0].c2s); err == nil {
				return c, nil
			}
			return d.DialContext(ctx, "tcp", nodes[2].c2s)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := r.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the reporter's session in node3's directory", func() bool {
		n, _ := status(t, nodes[2].http)
		return n >= 1
	})
	const total, killAt = 300, 100
	var ids []string
	var killed time.Time
	for i := 0; i < total; i++ {
		if i == killAt {
			killed = time.Now()
			if err := nodes[0].cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
		}
		id, err := r.Report(ctx, "collector.example.com", []byte(fmt.Sprintf("<reading xmlns='urn:example:r' n='%d'/>", i)))
		if err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
		if i == killAt {
			t.Logf("first report after node1's SIGKILL acked %v after the kill", time.Since(killed).Round(time.Millisecond))
		}
		ids = append(ids, id)
	}
	if !strings.Contains(logs.String(), "stream resumed") {
		t.Fatalf("the reporter did not resume its stream on node3:\n%s", logs.String())
	}
	testutil.WaitFor(t, 20*time.Second, "every report at the processor", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		return len(col.all) >= total
	})
	col.mu.Lock()
	defer col.mu.Unlock()
	for _, id := range ids {
		if col.all[id] == 0 {
			t.Fatalf("report %s acked but not delivered", id)
		}
	}
}
