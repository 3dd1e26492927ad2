package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/storage"
)

func testClaim(t *testing.T, f Factory) {
	ctx := testCtx(t)
	q := f.Open(t).Queue()

	if got := claim(ctx, t, q, "c.x", "A", time.Minute, 0, 10); len(got) != 0 {
		t.Fatalf("Claim on an empty queue = %v", ids(got))
	}
	var batch []storage.QueueItem
	for i := range 3 {
		for _, s := range []string{"s1@x", "s2@x", "s3@x"} {
			batch = append(batch, item("c.x", s, fmt.Sprint(s, i), fmt.Sprintf("<%s n='%d'/>", s, i)))
		}
	}
	enqueue(ctx, t, q, noLimits, batch...)
	enqueue(ctx, t, q, noLimits, item("other.x", "s1@x", "", "<other/>"))
	rows := list(ctx, t, q, "c.x", false)

	got := claim(ctx, t, q, "c.x", "A", time.Minute, 10, 100)
	if !slices.Equal(ids(got), ids(rows)) {
		t.Fatalf("Claim = %v, want every row in ID order %v", ids(got), ids(rows))
	}
	for i, it := range got {
		r := rows[i]
		if it.Attempts != 1 || it.Component != "c.x" || it.Sender != r.Sender || it.From != r.From ||
			it.StanzaID != r.StanzaID || string(it.Stanza) != string(r.Stanza) || !it.Enqueued.Equal(r.Enqueued) {
			t.Fatalf("claimed row %+v, want %+v with Attempts 1", it, r)
		}
	}
	// Never the same row twice to the same owner.
	if again := claim(ctx, t, q, "c.x", "A", time.Minute, 10, 100); len(again) != 0 {
		t.Fatalf("second Claim returned already claimed rows %v", ids(again))
	}

	// New rows come, max is honoured, lowest IDs first.
	enqueue(ctx, t, q, noLimits, item("c.x", "s2@x", "", "<new1/>"), item("c.x", "s1@x", "", "<new2/>"))
	wantBodies(t, "Claim(max 1)", claim(ctx, t, q, "c.x", "A", time.Minute, 10, 1), "<new1/>")
	wantBodies(t, "Claim(max 1) again", claim(ctx, t, q, "c.x", "A", time.Minute, 10, 1), "<new2/>")

	// Ack deletes; unknown IDs are ignored.
	ack(ctx, t, q, "c.x", got[:3])
	if err := q.Ack(ctx, "c.x", []int64{1 << 40}); err != nil {
		t.Fatalf("Ack(unknown): %v", err)
	}
	left := list(ctx, t, q, "c.x", false)
	if len(left) != 8 || left[0].ID != got[3].ID {
		t.Fatalf("after acking 3 of 11 rows, List = %v", ids(left))
	}
	for _, it := range left {
		if it.Attempts != 1 {
			t.Fatalf("List shows Attempts %d for a row claimed once", it.Attempts)
		}
	}
	wantBodies(t, "other component untouched", list(ctx, t, q, "other.x", false), "<other/>")

	// Release hands the unacked rows out again.
	if err := q.Release(ctx, "c.x", "A"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	again := claim(ctx, t, q, "c.x", "A", time.Minute, 10, 100)
	if !slices.Equal(ids(again), ids(left)) {
		t.Fatalf("Claim after Release = %v, want %v", ids(again), ids(left))
	}
	for _, it := range again {
		if it.Attempts != 2 {
			t.Fatalf("row %d handed out twice has Attempts %d", it.ID, it.Attempts)
		}
	}
	// Releasing an owner with nothing is fine.
	if err := q.Release(ctx, "c.x", "nobody"); err != nil {
		t.Fatalf("Release(nobody): %v", err)
	}
}

func testOwners(t *testing.T, f Factory) {
	ctx := testCtx(t)
	q := f.Open(t).Queue()

	all := []string{"s1@x", "s2@x", "s3@x", "s4@x"}
	for i := range 2 {
		for _, s := range all {
			enqueue(ctx, t, q, noLimits, item("c.x", s, "", fmt.Sprintf("<%s n='%d'/>", s, i)))
		}
	}

	a := claim(ctx, t, q, "c.x", "A", time.Minute, 2, 100)
	b := claim(ctx, t, q, "c.x", "B", time.Minute, 2, 100)
	sa, sb := senders(a), senders(b)
	if len(sa) != 2 || len(sb) != 2 || len(a) != 4 || len(b) != 4 {
		t.Fatalf("with maxPartitions 2, A got %v (%q) and B got %v (%q); want 2 whole partitions each", ids(a), sa, ids(b), sb)
	}
	for _, s := range sa {
		if slices.Contains(sb, s) {
			t.Fatalf("partition %s leased to both A and B", s)
		}
	}
	wantSortedIDs(t, "A's rows", a)
	wantSortedIDs(t, "B's rows", b)
	if st := stats(ctx, t, q, "c.x"); st.Leased != 4 || st.Partitions != 4 {
		t.Fatalf("Stats = %+v, want 4 partitions, 4 leased", st)
	}

	// New rows of a partition go to its lease holder only.
	enqueue(ctx, t, q, noLimits, item("c.x", sa[0], "", "<for A/>"))
	if got := claim(ctx, t, q, "c.x", "C", time.Minute, 2, 100); len(got) != 0 {
		t.Fatalf("C got %v while A and B hold every partition", ids(got))
	}
	if got := claim(ctx, t, q, "c.x", "B", time.Minute, 4, 100); len(got) != 0 {
		t.Fatalf("B got %v of A's partition", ids(got))
	}
	forA := claim(ctx, t, q, "c.x", "A", time.Minute, 2, 100)
	wantBodies(t, "A's new row", forA, "<for A/>")

	// An owner whose partitions are empty loses its leases on its next
	// Claim; the partitions become free.
	ack(ctx, t, q, "c.x", a)
	ack(ctx, t, q, "c.x", forA)
	if got := claim(ctx, t, q, "c.x", "A", time.Minute, 2, 100); len(got) != 0 {
		t.Fatalf("A got %v with its partitions empty and B holding the rest", ids(got))
	}
	if st := stats(ctx, t, q, "c.x"); st.Leased != 2 || st.Partitions != 2 {
		t.Fatalf("Stats after A drained = %+v, want 2 partitions, 2 leased (B's)", st)
	}
	enqueue(ctx, t, q, noLimits, item("c.x", sa[1], "", "<free again/>"))
	wantBodies(t, "C takes a free partition", claim(ctx, t, q, "c.x", "C", time.Minute, 2, 100), "<free again/>")

	// Release gives B's partitions, with their unacked rows, to another owner.
	if err := q.Release(ctx, "c.x", "B"); err != nil {
		t.Fatalf("Release(B): %v", err)
	}
	got := claim(ctx, t, q, "c.x", "A", time.Minute, 2, 100)
	if !slices.Equal(ids(got), ids(b)) {
		t.Fatalf("after B released, A got %v, want B's unacked rows %v", ids(got), ids(b))
	}
}

func testLeaseExpiry(t *testing.T, f Factory) {
	ctx := testCtx(t)
	q := f.Open(t).Queue()

	enqueue(ctx, t, q, noLimits,
		item("c.x", "s@x", "", "<1/>"),
		item("c.x", "s@x", "", "<2/>"),
		item("c.x", "s@x", "", "<3/>"),
	)
	const lease = time.Second
	start := time.Now()
	a := claim(ctx, t, q, "c.x", "A", lease, 1, 100)
	wantBodies(t, "A's claim", a, "<1/>", "<2/>", "<3/>")
	b := claim(ctx, t, q, "c.x", "B", time.Minute, 1, 100)
	if time.Since(start) >= lease {
		t.Fatalf("two Claims took %v, more than the %v lease: the machine is too slow for this case", time.Since(start), lease)
	}
	if len(b) != 0 {
		t.Fatalf("B got %v while A's lease lives", ids(b))
	}
	ack(ctx, t, q, "c.x", a[:1])

	// A stops renewing; once its lease expires B takes the partition and
	// gets A's unacked rows again.
	testutil.WaitFor(t, lease+10*time.Second, "B to take over A's expired lease", func() bool {
		b = claim(ctx, t, q, "c.x", "B", time.Minute, 1, 100)
		return len(b) > 0
	})
	if time.Since(start) < lease-50*time.Millisecond {
		t.Fatalf("B took over after %v, before A's %v lease expired", time.Since(start), lease)
	}
	wantBodies(t, "B's takeover", b, "<2/>", "<3/>")
	if !slices.Equal(ids(b), ids(a[1:])) || b[0].Attempts != 2 {
		t.Fatalf("B got %+v, want A's unacked rows %v with Attempts 2", b, ids(a[1:]))
	}
	if got := claim(ctx, t, q, "c.x", "A", lease, 1, 100); len(got) != 0 {
		t.Fatalf("A got %v back from B's live lease", ids(got))
	}
}

// testReleasePrefix: a restarted node releases what its previous run's
// connections held (owners "n1/…"), and nothing of other nodes.
func testReleasePrefix(t *testing.T, f Factory) {
	ctx := testCtx(t)
	q := f.Open(t).Queue()
	enqueue(ctx, t, q, noLimits,
		item("c.x", "a@x", "", "<a1/>"),
		item("c.x", "b@x", "", "<b1/>"),
	)
	a := claim(ctx, t, q, "c.x", "n1/old", time.Minute, 1, 100)
	b := claim(ctx, t, q, "c.x", "n2/conn", time.Minute, 1, 100)
	if len(a) != 1 || len(b) != 1 {
		t.Fatalf("claims: %v %v", ids(a), ids(b))
	}
	if err := q.ReleasePrefix(ctx, "c.x", "n1/"); err != nil {
		t.Fatal(err)
	}
	got := claim(ctx, t, q, "c.x", "n1/new", time.Minute, 0, 100)
	if !slices.Equal(ids(got), ids(a)) {
		t.Fatalf("after ReleasePrefix n1/ the new owner got %v, want n1's rows %v (not n2's)", ids(got), ids(a))
	}
}

// testConcurrency runs producers and consumers at once: every row is
// delivered exactly once (leases never expire here), in order per sender.
func testConcurrency(t *testing.T, f Factory) {
	ctx, cancel := context.WithTimeout(testCtx(t), 30*time.Second)
	defer cancel()
	q := f.Open(t).Queue()

	const (
		producers = 4
		batches   = 10
		batchSize = 5
		consumers = 3
		total     = producers * batches * batchSize
	)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		errs     []error
		acked    = map[int64]string{} // ID → owner that acked it
		produced int
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
		cancel()
	}
	done := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= total || len(errs) > 0
	}

	for p := range producers {
		wg.Go(func() {
			sender := fmt.Sprintf("p%d@x", p)
			for b := range batches {
				var items []storage.QueueItem
				for i := range batchSize {
					n := b*batchSize + i
					items = append(items, item("c.x", sender, fmt.Sprint(n), fmt.Sprintf("%d", n)))
				}
				res, err := q.Enqueue(ctx, items, limitsOf(storage.QueueLimits{DedupeWindow: time.Minute}))
				if err != nil {
					fail(fmt.Errorf("producer %d: Enqueue: %w", p, err))
					return
				}
				for i, r := range res {
					if r != storage.Queued {
						fail(fmt.Errorf("producer %d: item %d: %v", p, i, r))
						return
					}
				}
				mu.Lock()
				produced += len(items)
				mu.Unlock()
			}
		})
	}
	for c := range consumers {
		wg.Go(func() {
			owner := fmt.Sprintf("owner%d", c)
			ch, stop := q.Subscribe("c.x")
			defer stop()
			last := map[string]int64{} // sender → last ID seen by this owner
			for !done() {
				got, err := q.Claim(ctx, "c.x", owner, time.Minute, 2, 7)
				if err != nil {
					fail(fmt.Errorf("%s: Claim: %w", owner, err))
					return
				}
				for _, it := range got {
					if it.ID <= last[it.Sender] {
						fail(fmt.Errorf("%s: sender %s: ID %d after %d", owner, it.Sender, it.ID, last[it.Sender]))
						return
					}
					last[it.Sender] = it.ID
				}
				if len(got) > 0 {
					if err := q.Ack(ctx, "c.x", ids(got)); err != nil {
						fail(fmt.Errorf("%s: Ack: %w", owner, err))
						return
					}
					mu.Lock()
					for _, it := range got {
						if prev, dup := acked[it.ID]; dup {
							errs = append(errs, fmt.Errorf("row %d delivered to %s and %s", it.ID, prev, owner))
						}
						acked[it.ID] = owner
					}
					mu.Unlock()
					continue
				}
				select {
				case <-ch:
				case <-time.After(20 * time.Millisecond):
				case <-ctx.Done():
					fail(fmt.Errorf("%s: %w before every row was acked", owner, ctx.Err()))
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if produced != total || len(acked) != total {
		t.Fatalf("produced %d, acked %d, want %d each", produced, len(acked), total)
	}
	if st := stats(testCtx(t), t, q, "c.x"); st.Rows != 0 || st.Bytes != 0 {
		t.Fatalf("Stats after everything was acked = %+v", st)
	}
}
