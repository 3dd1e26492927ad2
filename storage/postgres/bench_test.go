package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/storage"
)

// benchStanza is a 300-byte report, about the size a field app sends.
var benchStanza = []byte("<message to='c.x' id='x'><report xmlns='urn:xcollect'>" + strings.Repeat("v", 300-76) + "</report></message>")

var benchLimits = func(string) storage.QueueLimits {
	return storage.QueueLimits{MaxRows: 1 << 40, MaxBytes: 1 << 50, DedupeWindow: time.Hour}
}

// BenchmarkEnqueue measures group commit against a durable (fsync on)
// throw-away Postgres: one op is one Enqueue call of batch items from 64
// senders, each with its own origin id (so the dedupe path runs).
func BenchmarkEnqueue(b *testing.B) {
	srv := pgtest.StartOptions(b, pgtest.Options{Durable: true})
	for _, batch := range []int{1, 16, 128, 1024} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := open(b, srv.CreateDatabase(b))
			q := s.Queue()
			ctx := context.Background()
			var seq int64
			b.ReportAllocs()
			b.SetBytes(int64(batch * len(benchStanza)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := q.Enqueue(ctx, benchItems(batch, &seq), benchLimits); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkEnqueueParallel runs 8 concurrent writers on one component, as
// several nodes do: they serialise on the component's counters row.
func BenchmarkEnqueueParallel(b *testing.B) {
	srv := pgtest.StartOptions(b, pgtest.Options{Durable: true})
	for _, batch := range []int{16, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := open(b, srv.CreateDatabase(b))
			q := s.Queue()
			var seq int64
			var errs atomic.Int64
			b.SetBytes(int64(batch * len(benchStanza)))
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := q.Enqueue(context.Background(), benchItems(batch, &seq), benchLimits); err != nil {
						errs.Add(1)
					}
				}
			})
			b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64(errs.Load()), "errors")
		})
	}
}

func benchItems(n int, seq *int64) []storage.QueueItem {
	its := make([]storage.QueueItem, n)
	for i := range its {
		id := atomic.AddInt64(seq, 1)
		s := fmt.Sprintf("dev%d@x", id%64)
		its[i] = storage.QueueItem{Component: "c.x", Sender: s, From: s + "/r", StanzaID: fmt.Sprint(id), OriginID: fmt.Sprint(id), Stanza: benchStanza}
	}
	return its
}
