package component_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/embedded"
)

// flakyStore fails Enqueue while down is set.
type flakyStore struct {
	storage.Store
	down  atomic.Bool
	calls atomic.Int64
}

type flakyQueue struct {
	storage.QueueStore
	s *flakyStore
}

func (f *flakyStore) Queue() storage.QueueStore { return flakyQueue{f.Store.Queue(), f} }

func (q flakyQueue) Enqueue(ctx context.Context, items []storage.QueueItem, limits func(string) storage.QueueLimits) ([]storage.EnqueueResult, error) {
	q.s.calls.Add(1)
	if q.s.down.Load() {
		return nil, errors.New("store down")
	}
	return q.QueueStore.Enqueue(ctx, items, limits)
}

type nopRouter struct{}

func (nopRouter) RouteFromComponent(string, *wire.Element) {}

func TestCommitterHoldsBacklogWhileStoreDown(t *testing.T) {
	log := zerolog.New(zerolog.NewTestWriter(t))
	st, err := embedded.Open(t.TempDir()+"/s.db", embedded.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fs := &flakyStore{Store: st}
	fs.down.Store(true)
	m, err := component.New(component.Config{Addr: "127.0.0.1:0", Logger: log, Backlog: 10,
		Components: []component.Spec{{JID: compA, Secret: secret}}}, fs, nopRouter{}, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	results := map[int]error{}
	for i := range 11 {
		m.Submit(storage.QueueItem{Component: compA, Sender: "a@example.com", Stanza: []byte("<message/>")}, func(r storage.EnqueueResult, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err == nil && r != storage.Queued {
				err = errors.New(r.String())
			}
			results[i] = err
		})
	}
	testutil.WaitFor(t, wait, "retries", func() bool { return fs.calls.Load() >= 3 })
	mu.Lock()
	if len(results) != 1 || !errors.Is(results[10], component.ErrBacklogFull) {
		t.Fatalf("while down: results %v, want only #10 = ErrBacklogFull", results)
	}
	mu.Unlock()
	fs.down.Store(false)
	testutil.WaitFor(t, wait, "commit after recovery", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(results) == 11
	})
	for i := range 10 {
		if results[i] != nil {
			t.Fatalf("item %d: %v", i, results[i])
		}
	}
	rows, err := st.Queue().List(context.Background(), compA, false, 100)
	if err != nil || len(rows) != 10 {
		t.Fatalf("%d rows queued (err %v), want 10", len(rows), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	m.Submit(storage.QueueItem{Component: compA}, func(_ storage.EnqueueResult, err error) { done <- err })
	if err := <-done; !errors.Is(err, component.ErrShutdown) {
		t.Fatalf("after shutdown: %v", err)
	}
}
