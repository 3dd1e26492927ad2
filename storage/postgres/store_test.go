package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/postgres"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctxT(t), dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) }) //nolint:errcheck // test connection
	return c
}

func queryInt(t testing.TB, c *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := c.QueryRow(ctxT(t), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func noLimits(string) storage.QueueLimits { return storage.QueueLimits{} }

func items(component string, n, senders int, body string) []storage.QueueItem {
	its := make([]storage.QueueItem, n)
	for i := range its {
		s := fmt.Sprintf("s%d@x", i%senders)
		its[i] = storage.QueueItem{Component: component, Sender: s, From: s + "/r", StanzaID: fmt.Sprint(i), Stanza: []byte(body)}
	}
	return its
}

func TestMigrateIdempotentAndConcurrent(t *testing.T) {
	dsn := pg.CreateDatabase(t)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		wg.Go(func() { errs <- postgres.Migrate(ctx, dsn) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	if err := postgres.Migrate(ctx, dsn); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	c := connect(t, dsn)
	if n := queryInt(t, c, "SELECT count(*) FROM schema_migrations"); n != 2 {
		t.Fatalf("schema_migrations has %d rows, want 2 (one per migration)", n)
	}
	// Open migrates too and finds nothing to do.
	s := open(t, dsn)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// TestEnqueueOneTransaction checks group commit on both insert paths
// (unnest below the COPY threshold, COPY above it): all rows of one call
// share one transaction id and get increasing ids in item order.
func TestEnqueueOneTransaction(t *testing.T) {
	dsn := pg.CreateDatabase(t)
	s := open(t, dsn)
	c := connect(t, dsn)
	ctx := ctxT(t)
	for _, n := range []int{100, 700} {
		comp := fmt.Sprintf("c%d.x", n)
		its := items(comp, n, 7, "<m/>")
		res, err := s.Queue().Enqueue(ctx, its, noLimits)
		if err != nil {
			t.Fatalf("Enqueue(%d): %v", n, err)
		}
		for i, r := range res {
			if r != storage.Queued {
				t.Fatalf("item %d: %v", i, r)
			}
		}
		if x := queryInt(t, c, "SELECT count(DISTINCT xmin::text) FROM queue WHERE component = $1", comp); x != 1 {
			t.Fatalf("%d items were written by %d transactions, want 1", n, x)
		}
		got, err := s.Queue().List(ctx, comp, false, 0)
		if err != nil || len(got) != n {
			t.Fatalf("List = %d rows, %v; want %d", len(got), err, n)
		}
		for i := range got {
			if got[i].StanzaID != its[i].StanzaID || (i > 0 && got[i].ID <= got[i-1].ID) {
				t.Fatalf("row %d = id %d stanza %q; want item order with increasing ids", i, got[i].ID, got[i].StanzaID)
			}
		}
		st, err := s.Queue().Stats(ctx, comp)
		if err != nil || st[0].Rows != int64(n) || st[0].Bytes != int64(4*n) || st[0].Partitions != 7 {
			t.Fatalf("Stats = %+v, %v", st, err)
		}
	}
}

// TestClaimTakeoverAcrossNodes runs two stores (two nodes) on one database:
// B takes A's partitions only after A's lease expired, and gets A's
// unacked rows again.
func TestClaimTakeoverAcrossNodes(t *testing.T) {
	dsn := pg.CreateDatabase(t)
	a, b := open(t, dsn).Queue(), open(t, dsn).Queue()
	ctx := ctxT(t)
	if _, err := a.Enqueue(ctx, items("c.x", 6, 2, "<m/>"), noLimits); err != nil {
		t.Fatal(err)
	}
	const lease = 300 * time.Millisecond
	got, err := a.Claim(ctx, "c.x", "A", lease, 0, 100)
	if err != nil || len(got) != 6 {
		t.Fatalf("A claimed %d, %v; want 6", len(got), err)
	}
	if got, err := b.Claim(ctx, "c.x", "B", time.Minute, 0, 100); err != nil || len(got) != 0 {
		t.Fatalf("B claimed %d rows under A's lease, %v", len(got), err)
	}
	if err := a.Ack(ctx, "c.x", []int64{got[0].ID}); err != nil {
		t.Fatal(err)
	}
	var taken []storage.QueueItem
	testutil.WaitFor(t, 10*time.Second, "B to take over after A's lease expired", func() bool {
		taken, err = b.Claim(ctx, "c.x", "B", time.Minute, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		return len(taken) > 0
	})
	if len(taken) != 5 {
		t.Fatalf("B took %d rows, want A's 5 unacked", len(taken))
	}
	for i, it := range taken {
		if it.Attempts != 2 || it.ID != got[i+1].ID {
			t.Fatalf("taken row %d = id %d attempts %d; want id %d attempts 2", i, it.ID, it.Attempts, got[i+1].ID)
		}
	}
	if again, err := a.Claim(ctx, "c.x", "A", lease, 0, 100); err != nil || len(again) != 0 {
		t.Fatalf("A claimed %d rows of B's partitions, %v", len(again), err)
	}
	ids := make([]int64, len(taken))
	for i, it := range taken {
		ids[i] = it.ID
	}
	if err := b.Ack(ctx, "c.x", ids); err != nil {
		t.Fatal(err)
	}
	// The next claim releases B's now empty leases.
	if _, err := b.Claim(ctx, "c.x", "B", time.Minute, 0, 100); err != nil {
		t.Fatal(err)
	}
	st, err := b.Stats(ctx, "c.x")
	if err != nil || st[0].Rows != 0 || st[0].Leased != 0 || st[0].Partitions != 0 {
		t.Fatalf("Stats = %+v, %v; want empty", st, err)
	}
}

// waitListening waits until n LISTEN connections are in place on dsn's
// database.
func waitListening(t testing.TB, c *pgx.Conn, n int) {
	t.Helper()
	testutil.WaitFor(t, 15*time.Second, "LISTEN connection", func() bool {
		var got int64
		err := c.QueryRow(ctxT(t), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query = 'LISTEN xcollect_queue'`).Scan(&got)
		return err == nil && got >= int64(n)
	})
}

func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func woken(ch <-chan struct{}, within time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(within):
		return false
	}
}

func TestSubscribeNotifyFromOtherPool(t *testing.T) {
	dsn := pg.CreateDatabase(t)
	s1, s2 := open(t, dsn), open(t, dsn)
	c := connect(t, dsn)
	ch, cancel := s1.Queue().Subscribe("c.x")
	defer cancel()
	other, cancelOther := s1.Queue().Subscribe("other.x")
	defer cancelOther()
	waitListening(t, c, 2)
	drain(ch)
	drain(other)

	// A bare NOTIFY from an unrelated connection (no local shortcut).
	if _, err := c.Exec(ctxT(t), "SELECT pg_notify('xcollect_queue', 'c.x')"); err != nil {
		t.Fatal(err)
	}
	if !woken(ch, 5*time.Second) {
		t.Fatal("subscriber not woken by NOTIFY from another connection")
	}
	// An Enqueue committed by another node.
	if _, err := s2.Queue().Enqueue(ctxT(t), items("c.x", 3, 1, "<m/>"), noLimits); err != nil {
		t.Fatal(err)
	}
	if !woken(ch, 5*time.Second) {
		t.Fatal("subscriber not woken by another node's Enqueue")
	}
	if woken(other, 100*time.Millisecond) {
		t.Fatal("subscriber of other.x woken by rows for c.x")
	}
	cancel()
	cancel() // idempotent
	drain(ch)
	if _, err := s2.Queue().Enqueue(ctxT(t), items("c.x", 1, 1, "<m/>"), noLimits); err != nil {
		t.Fatal(err)
	}
	if woken(ch, 200*time.Millisecond) {
		t.Fatal("cancelled subscription still woken")
	}
}

// TestSubscribeRecoversAfterRestart stops Postgres under a subscribed store
// and starts it again: the listener reconnects and wakes every subscriber
// (notifications sent while it was away are lost), then NOTIFY works again.
func TestSubscribeRecoversAfterRestart(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDatabase(t)
	s := open(t, dsn)
	ch, cancel := s.Queue().Subscribe("c.x")
	defer cancel()
	waitListening(t, connect(t, dsn), 1)
	drain(ch)

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded with Postgres stopped")
	}
	drain(ch)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if !woken(ch, 15*time.Second) {
		t.Fatal("subscriber not woken after the listener reconnected")
	}
	c := connect(t, dsn)
	waitListening(t, c, 1)
	drain(ch)
	if _, err := c.Exec(ctx, "SELECT pg_notify('xcollect_queue', 'c.x')"); err != nil {
		t.Fatal(err)
	}
	if !woken(ch, 5*time.Second) {
		t.Fatal("subscriber not woken by NOTIFY after restart")
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after restart: %v", err)
	}
	if _, err := s.Queue().Enqueue(ctx, items("c.x", 2, 1, "<m/>"), noLimits); err != nil {
		t.Fatalf("Enqueue after restart: %v", err)
	}
}

// TestOpenWaitsForDatabase opens a store while Postgres is down: Open
// retries until the server is back; with a short StartupTimeout it fails
// with a clear error.
func TestOpenWaitsForDatabase(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDatabase(t)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	cfg := testConfig(t, dsn)
	cfg.StartupTimeout = 300 * time.Millisecond
	if _, err := postgres.Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "not reachable") {
		t.Fatalf("Open with Postgres down = %v, want a 'not reachable' error", err)
	}

	started := make(chan error, 1)
	go func() {
		time.Sleep(500 * time.Millisecond) // let Open fail at least once
		started <- srv.Start()
	}()
	cfg.StartupTimeout = 30 * time.Second
	s, err := postgres.Open(ctx, cfg)
	if serr := <-started; serr != nil {
		t.Fatal(serr)
	}
	if err != nil {
		t.Fatalf("Open while Postgres starts: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenConfigErrors(t *testing.T) {
	ctx := ctxT(t)
	if _, err := postgres.Open(ctx, postgres.Config{}); err == nil || !strings.Contains(err.Error(), postgres.EnvDSN) {
		t.Fatalf("Open without DSN = %v, want a hint naming %s", err, postgres.EnvDSN)
	}
	t.Setenv(postgres.EnvDSN, "postgres://x@127.0.0.1:1/db")
	if got := postgres.DSNFromEnv(); got != "postgres://x@127.0.0.1:1/db" {
		t.Fatalf("DSNFromEnv = %q", got)
	}
}
