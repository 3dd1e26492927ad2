package embedded_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/embedded"
	"xcollect.dev/xcollect/storage/storetest"
)

// open opens a store in a fresh file of t's temp dir, closed at cleanup.
func open(t testing.TB, path string) *embedded.Store {
	t.Helper()
	s, err := embedded.Open(path, embedded.Options{Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func factory() storetest.Factory {
	return storetest.Factory{
		Open: func(t *testing.T) storage.Store {
			return open(t, filepath.Join(t.TempDir(), "xcollect.db"))
		},
		Reopen: func(t *testing.T, s storage.Store) storage.Store {
			es := s.(*embedded.Store)
			path := es.Path()
			if err := es.Close(); err != nil {
				t.Fatalf("Close before reopen: %v", err)
			}
			return open(t, path)
		},
	}
}

// TestContract runs the storage contract suite with fsync on, as in
// production.
func TestContract(t *testing.T) {
	storetest.Run(t, factory())
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xcollect.db")
	open(t, path)
	start := time.Now()
	_, err := embedded.Open(path, embedded.Options{OpenTimeout: 100 * time.Millisecond})
	if err == nil {
		t.Fatal("second Open of a file in use succeeded")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("second Open took %v", time.Since(start))
	}
}

func BenchmarkEnqueue(b *testing.B) {
	for _, batch := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := open(b, filepath.Join(b.TempDir(), "bench.db"))
			q := s.Queue()
			stanza := []byte(`<message to='collector.example.com' from='dev@example.com/r' id='0123456789'><report xmlns='urn:x'>temperature=21.5 humidity=40</report></message>`)
			items := make([]storage.QueueItem, batch)
			for i := range items {
				items[i] = storage.QueueItem{
					Component: "collector.example.com",
					Sender:    fmt.Sprintf("dev%d@example.com", i%20),
					From:      fmt.Sprintf("dev%d@example.com/r", i%20),
					Stanza:    stanza,
				}
			}
			limits := func(string) storage.QueueLimits { return storage.QueueLimits{} }
			ctx := b.Context()
			b.SetBytes(int64(batch * len(stanza)))
			b.ReportAllocs()
			b.ResetTimer()
			var failed float64
			for b.Loop() {
				if _, err := q.Enqueue(ctx, items, limits); err != nil {
					failed++
				}
			}
			b.ReportMetric(failed, "errors")
		})
	}
}
