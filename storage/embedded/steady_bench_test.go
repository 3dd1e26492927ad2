package embedded_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/embedded"
)

// BenchmarkEnqueueSteady is the store's share of the steady-rate case of
// the bench: groups of 10 reports from 50 senders every 5 ms (2,000
// reports/s, as the committer sends them at that rate) with fsync on, while
// a delivery loop claims and acks (deletes) what was committed, as
// component/deliver.go does. One op is one group; it reports the commit
// latency of Enqueue (p50, p99, max) as the committer sees it. Run it with
// a bounded -benchtime, e.g. -benchtime 1000x (5 s).
func BenchmarkEnqueueSteady(b *testing.B) {
	for _, ackEvery := range []time.Duration{0, 20 * time.Millisecond} {
		b.Run(fmt.Sprintf("delete-every=%v", ackEvery), func(b *testing.B) { enqueueSteady(b, ackEvery) })
	}
}

// enqueueSteady runs the steady load; the delivery loop deletes delivered
// rows at once (deleteEvery 0) or at most every deleteEvery.
func enqueueSteady(b *testing.B, deleteEvery time.Duration) {
	s, err := embedded.Open(filepath.Join(b.TempDir(), "xcollect.db"), embedded.Options{Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	q := s.Queue()
	const component, group, every = "collector.localhost", 10, 5 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, unsub := q.Subscribe(component)
	defer unsub()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the delivery loop: claim, then delete what it claimed
		defer wg.Done()
		var pending []int64
		var lastDelete time.Time
		tick := time.NewTicker(max(deleteEvery, time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-sub:
			case <-tick.C:
			case <-ctx.Done():
				return
			}
			items, err := q.Claim(ctx, component, "bench/1", 30*time.Second, 0, 256)
			if err != nil {
				return
			}
			for i := range items {
				pending = append(pending, items[i].ID)
			}
			if len(pending) > 0 && time.Since(lastDelete) >= deleteEvery {
				if err := q.Ack(ctx, component, pending); err != nil {
					return
				}
				pending, lastDelete = pending[:0], time.Now()
			}
		}
	}()

	lat := make([]time.Duration, 0, b.N)
	next := time.Now()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(every)
		items := make([]storage.QueueItem, group)
		for i := range items {
			items[i] = storage.QueueItem{
				Component: component, Sender: fmt.Sprintf("user%d@localhost", (n*group+i)%50),
				StanzaID: fmt.Sprint(n*group + i), Stanza: make([]byte, 200),
			}
		}
		t0 := time.Now()
		if _, err := q.Enqueue(ctx, items, nil); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	cancel()
	wg.Wait()
	reportLatency(b, lat)
}

// BenchmarkFdatasync4K is the physical floor under every durable commit on
// this file system: one op is a 4 KiB pwrite plus fdatasync on a file in
// the test's temporary directory; it reports p50, p99 and max. A bbolt
// commit does two of these (its pages, then its meta page), so the
// store's commit latency cannot go below twice this op's percentiles.
func BenchmarkFdatasync4K(b *testing.B) {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "sync"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		t0 := time.Now()
		if _, err := f.WriteAt(buf, int64(n%256)*4096); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportLatency(b, lat)
}

// reportLatency reports p50, p99 and max of lat in µs.
func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	at := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds())
	}
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
}
