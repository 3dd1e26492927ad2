package metrics

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/embedded"
)

func openStore(t *testing.T) storage.Store {
	t.Helper()
	s, err := embedded.Open(filepath.Join(t.TempDir(), "x.db"), embedded.Options{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func item(sender, origin string) storage.QueueItem {
	return storage.QueueItem{Component: "c.example", Sender: sender, From: sender + "/r", OriginID: origin, Stanza: []byte("<message/>")}
}

// TestInstrumentedQueueCounts: every outcome of the queue is counted where
// it happens: queued, duplicate (dedupe hit), full, delivered,
// redelivered after a lost lease, acked, dead-lettered.
func TestInstrumentedQueueCounts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := New(zerolog.Nop())
	q := m.InstrumentStore(openStore(t)).Queue()
	limits := func(string) storage.QueueLimits {
		return storage.QueueLimits{MaxRows: 3, DedupeWindow: time.Hour}
	}
	res, err := q.Enqueue(ctx, []storage.QueueItem{item("a@x", "o1"), item("a@x", "o1"), item("b@x", "o2")}, limits)
	if err != nil {
		t.Fatal(err)
	}
	if res[0] != storage.Queued || res[1] != storage.Duplicate || res[2] != storage.Queued {
		t.Fatalf("results %v", res)
	}
	if _, err := q.Enqueue(ctx, []storage.QueueItem{item("c@x", "o3"), item("c@x", "o4")}, limits); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"queued": 3, "duplicate": 1, "full": 1}
	for result, n := range want {
		if got := testutil.ToFloat64(m.enqueued.WithLabelValues("c.example", result)); got != n {
			t.Errorf("enqueued{result=%s} = %v, want %v", result, got, n)
		}
	}
	if got := testutil.CollectAndCount(m.commitBatch); got != 1 {
		t.Fatalf("batch histogram series = %d", got)
	}

	rows, err := q.Claim(ctx, "c.example", "n/1", time.Hour, 0, 10)
	if err != nil || len(rows) != 3 {
		t.Fatalf("claim: %d rows, %v", len(rows), err)
	}
	// The owner goes away without acking: the rows are handed out again.
	if err := q.Release(ctx, "c.example", "n/1"); err != nil {
		t.Fatal(err)
	}
	again, err := q.Claim(ctx, "c.example", "n/2", time.Hour, 0, 10)
	if err != nil || len(again) != 3 {
		t.Fatalf("claim again: %d rows, %v", len(again), err)
	}
	if got := testutil.ToFloat64(m.delivered.WithLabelValues("c.example")); got != 6 {
		t.Errorf("delivered = %v, want 6", got)
	}
	if got := testutil.ToFloat64(m.redelivered.WithLabelValues("c.example")); got != 3 {
		t.Errorf("redelivered = %v, want 3", got)
	}
	if err := q.Ack(ctx, "c.example", []int64{again[0].ID}); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.acked.WithLabelValues("c.example")); got != 1 {
		t.Errorf("acked = %v, want 1", got)
	}
	n, err := q.Expire(ctx, "c.example", time.Now().Add(time.Minute))
	if err != nil || n != 2 {
		t.Fatalf("expire: %d, %v", n, err)
	}
	if got := testutil.ToFloat64(m.deadLettered.WithLabelValues("c.example")); got != 2 {
		t.Errorf("dead-lettered = %v, want 2", got)
	}
}

// failingQueue fails every call.
type failingQueue struct{ storage.QueueStore }

var errDown = errors.New("store down")

func (failingQueue) Enqueue(context.Context, []storage.QueueItem, func(string) storage.QueueLimits) ([]storage.EnqueueResult, error) {
	return nil, errDown
}

func (failingQueue) Stats(context.Context, string) ([]storage.QueueStats, error) { return nil, errDown }

type failingStore struct{ storage.Store }

func (failingStore) Queue() storage.QueueStore { return failingQueue{} }

// TestStoreErrorsCounted: a failing store call is counted by operation and
// its error reaches the caller unchanged; a failing scrape read leaves the
// queue series out and counts too, the rest of the scrape is served.
func TestStoreErrorsCounted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := New(zerolog.Nop())
	st := failingStore{openStore(t)}
	_, err := m.InstrumentStore(st).Queue().Enqueue(ctx, []storage.QueueItem{item("a@x", "")}, nil)
	if !errors.Is(err, errDown) {
		t.Fatalf("err = %v", err)
	}
	if got := testutil.ToFloat64(m.storeErrors.WithLabelValues("queue_enqueue")); got != 1 {
		t.Fatalf("store errors = %v", got)
	}
	m.Watch(Sources{
		Server:     func() ServerCounters { return ServerCounters{Sessions: 7} },
		Queues:     func(ctx context.Context) ([]storage.QueueStats, error) { return st.Queue().Stats(ctx, "") },
		Components: func() []string { return []string{"c.example"} },
	})
	out, err := testutil.GatherAndCount(m.Registry(), "xcollect_queue_rows", "xcollect_sessions")
	if err != nil {
		t.Fatal(err)
	}
	if out != 1 {
		t.Fatalf("series = %d, want only xcollect_sessions", out)
	}
	if got := testutil.ToFloat64(m.storeErrors.WithLabelValues("queue_stats")); got != 1 {
		t.Fatalf("scrape read errors = %v", got)
	}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(`
# HELP xcollect_sessions Client sessions bound on this node.
# TYPE xcollect_sessions gauge
xcollect_sessions 7
`), "xcollect_sessions"); err != nil {
		t.Fatal(err)
	}
}

// TestOldestAge: the age comes from the oldest row and the clock.
func TestOldestAge(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	m := New(zerolog.Nop())
	m.Watch(Sources{
		Queues: func(context.Context) ([]storage.QueueStats, error) {
			return []storage.QueueStats{{Component: "c.example", Rows: 4, Oldest: now.Add(-90 * time.Second)}}, nil
		},
		Components: func() []string { return []string{"c.example", "idle.example"} },
		Now:        func() time.Time { return now },
	})
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(`
# HELP xcollect_queue_oldest_age_seconds Age of the oldest row waiting in a component's queue; 0 when empty. A processor falling behind shows here first.
# TYPE xcollect_queue_oldest_age_seconds gauge
xcollect_queue_oldest_age_seconds{component="c.example"} 90
xcollect_queue_oldest_age_seconds{component="idle.example"} 0
`), "xcollect_queue_oldest_age_seconds"); err != nil {
		t.Fatal(err)
	}
}
