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

// open opens the store at path with fsync on, closed at cleanup.
func open(t testing.TB, path string) *embedded.Store {
	t.Helper()
	return openWith(t, path, embedded.Options{Logger: zerolog.New(zerolog.NewTestWriter(t))})
}

func openWith(t testing.TB, path string, opts embedded.Options) *embedded.Store {
	t.Helper()
	s, err := embedded.Open(path, opts)
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
			s := openWith(b, filepath.Join(b.TempDir(), "bench.db"), embedded.Options{Logger: zerolog.Nop()})
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

// BenchmarkClaim measures one Claim+Ack round (two commits) on a backlog of
// 10,000 rows from 20 senders: its cost must follow max and the senders, not
// the rows. fsync=false shows the CPU cost without the disk.
func BenchmarkClaim(b *testing.B) {
	for _, fsync := range []bool{true, false} {
		b.Run(fmt.Sprintf("fsync=%v", fsync), func(b *testing.B) {
			s := openWith(b, filepath.Join(b.TempDir(), "bench.db"), embedded.Options{Logger: zerolog.Nop(), NoSync: !fsync})
			benchClaim(b, s.Queue())
		})
	}
}

func benchClaim(b *testing.B, q storage.QueueStore) {
	const rows, nSenders, max = 10000, 20, 64
	ctx := b.Context()
	stanza := []byte(`<message><report xmlns='urn:x'>t=21.5</report></message>`)
	limits := func(string) storage.QueueLimits { return storage.QueueLimits{} }
	fill := func(n int) {
		items := make([]storage.QueueItem, 0, 1000)
		for i := range n {
			items = append(items, storage.QueueItem{Component: "c.x", Sender: fmt.Sprintf("dev%d@x", i%nSenders), Stanza: stanza})
			if len(items) == cap(items) || i == n-1 {
				if _, err := q.Enqueue(ctx, items, limits); err != nil {
					b.Fatal(err)
				}
				items = items[:0]
			}
		}
	}
	fill(rows)
	b.ReportAllocs()
	b.ResetTimer()
	var failed float64
	for b.Loop() {
		got, err := q.Claim(ctx, "c.x", "A", time.Minute, 0, max)
		if err != nil || len(got) == 0 {
			failed++
			continue
		}
		ids := make([]int64, len(got))
		for i, it := range got {
			ids[i] = it.ID
		}
		if err := q.Ack(ctx, "c.x", ids); err != nil {
			failed++
		}
		b.StopTimer()
		fill(len(got)) // keep the backlog at 10,000 rows
		b.StartTimer()
	}
	b.ReportMetric(failed, "errors")
}
