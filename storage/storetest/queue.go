package storetest

import (
	"slices"
	"testing"
	"time"

	"xcollect.dev/xcollect/storage"
)

const (
	queued    = storage.Queued
	duplicate = storage.Duplicate
	full      = storage.Full
)

func testEnqueue(t *testing.T, f Factory) {
	ctx := testCtx(t)
	q := f.Open(t).Queue()

	before := time.Now()
	batch := []storage.QueueItem{
		item("c1.x", "s1@x", "1", "<message id='1'/>"),
		item("c2.x", "s1@x", "2", "<message id='2'/>"),
		item("c1.x", "s2@x", "", "<message/>"),
	}
	batch[0].From = "s1@x/phone"
	wantResults(t, enqueue(ctx, t, q, noLimits, batch...), queued, queued, queued)
	after := time.Now()
	batch[0].Stanza[1] = 'X' // the store must have copied it

	c1 := list(ctx, t, q, "c1.x", false)
	wantBodies(t, "List(c1)", c1, "<message id='1'/>", "<message/>")
	wantSortedIDs(t, "List(c1)", c1)
	want := []storage.QueueItem{
		{Component: "c1.x", Sender: "s1@x", From: "s1@x/phone", StanzaID: "1"},
		{Component: "c1.x", Sender: "s2@x", From: "s2@x/r", StanzaID: ""},
	}
	for i, it := range c1 {
		w := want[i]
		if it.Component != w.Component || it.Sender != w.Sender || it.From != w.From || it.StanzaID != w.StanzaID {
			t.Fatalf("List(c1)[%d] = %+v, want fields of %+v", i, it, w)
		}
		if it.ID <= 0 || it.Attempts != 0 || it.Reason != "" || !near(it.Enqueued, before, after) {
			t.Fatalf("List(c1)[%d] = %+v: want ID > 0, Attempts 0, no Reason, Enqueued near now", i, it)
		}
	}
	c2 := list(ctx, t, q, "c2.x", false)
	wantBodies(t, "List(c2)", c2, "<message id='2'/>")
	if c2[0].ID == c1[0].ID || c2[0].ID == c1[1].ID {
		t.Fatalf("IDs are not unique across components: %v %v", ids(c1), ids(c2))
	}

	// A later Enqueue gets larger IDs.
	wantResults(t, enqueue(ctx, t, q, noLimits, item("c1.x", "s1@x", "3", "<message id='3'/>")), queued)
	c1 = list(ctx, t, q, "c1.x", false)
	wantBodies(t, "List(c1) after second enqueue", c1, "<message id='1'/>", "<message/>", "<message id='3'/>")
	if last := c1[2].ID; last <= max(c1[0].ID, c1[1].ID, c2[0].ID) {
		t.Fatalf("second Enqueue got ID %d, not above the first batch %v %v", last, ids(c1[:2]), ids(c2))
	}

	// List honours its limit and knows no unknown component.
	if got, err := q.List(ctx, "c1.x", false, 2); err != nil || len(got) != 2 || got[0].ID != c1[0].ID {
		t.Fatalf("List(limit 2) = %v, %v; want the first two rows", ids(got), err)
	}
	wantBodies(t, "List(unknown)", list(ctx, t, q, "nobody.x", false))
	wantBodies(t, "List(c1, dead)", list(ctx, t, q, "c1.x", true))

	// An empty batch is fine.
	if res, err := q.Enqueue(ctx, nil, noLimits); err != nil || len(res) != 0 {
		t.Fatalf("Enqueue(nil) = %v, %v; want no results, no error", res, err)
	}
}

func testDedupe(t *testing.T, f Factory) {
	ctx := testCtx(t)
	q := f.Open(t).Queue()
	hour := limitsOf(storage.QueueLimits{DedupeWindow: time.Hour})

	// Stanza ids are unique only within one stream: items that repeat a
	// StanzaID without an OriginID are distinct reports, all queued.
	wantResults(t, enqueue(ctx, t, q, hour,
		item("n.x", "s1@x", "1", "<n1/>"),
		item("n.x", "s1@x", "1", "<n2/>"),
	), queued, queued)
	wantResults(t, enqueue(ctx, t, q, hour, item("n.x", "s1@x", "1", "<n3/>")), queued)
	wantBodies(t, "List(n)", list(ctx, t, q, "n.x", false), "<n1/>", "<n2/>", "<n3/>")

	// Repeats inside one batch are caught; the sender is part of the key;
	// an empty origin id is never deduplicated; the stanza id plays no part.
	wantResults(t, enqueue(ctx, t, q, hour,
		origin(item("c.x", "s1@x", "a", "<a/>"), "id1"),
		origin(item("c.x", "s1@x", "b", "<a again/>"), "id1"),
		origin(item("c.x", "s2@x", "a", "<b/>"), "id1"),
		item("c.x", "s1@x", "id1", "<c/>"),
		item("c.x", "s1@x", "id1", "<c/>"),
	), queued, duplicate, queued, queued, queued)
	wantResults(t, enqueue(ctx, t, q, hour, origin(item("c.x", "s1@x", "", "<a retry/>"), "id1")), duplicate)
	rows := list(ctx, t, q, "c.x", false)
	wantBodies(t, "List", rows, "<a/>", "<b/>", "<c/>", "<c/>")

	// The entry outlives the row: a retry after the ack is still a repeat.
	ack(ctx, t, q, "c.x", rows)
	wantResults(t, enqueue(ctx, t, q, hour, origin(item("c.x", "s1@x", "id1", "<a late retry/>"), "id1")), duplicate)
	// Another component has its own entries.
	wantResults(t, enqueue(ctx, t, q, hour, origin(item("d.x", "s1@x", "id1", "<d/>"), "id1")), queued)
	// No window, no dedupe.
	wantResults(t, enqueue(ctx, t, q, noLimits,
		origin(item("e.x", "s1@x", "id1", "<e/>"), "id1"),
		origin(item("e.x", "s1@x", "id1", "<e/>"), "id1"),
	), queued, queued)

	// Outside the window the same id is queued again.
	const window = 500 * time.Millisecond
	short := limitsOf(storage.QueueLimits{DedupeWindow: window})
	start := time.Now()
	wantResults(t, enqueue(ctx, t, q, short, origin(item("w.x", "s1@x", "w1", "<w/>"), "w1")), queued)
	res := enqueue(ctx, t, q, short, origin(item("w.x", "s1@x", "w1", "<w/>"), "w1"))
	if time.Since(start) >= window {
		t.Fatalf("two Enqueue calls took %v, more than the %v window: the machine is too slow for this case", time.Since(start), window)
	}
	wantResults(t, res, duplicate)
	waitElapsed(t, time.Now(), window+100*time.Millisecond)
	wantResults(t, enqueue(ctx, t, q, short, origin(item("w.x", "s1@x", "w1", "<w later/>"), "w1")), queued)
	wantBodies(t, "List(w)", list(ctx, t, q, "w.x", false), "<w/>", "<w later/>")
}

func testLimits(t *testing.T, f Factory) {
	ctx := testCtx(t)
	q := f.Open(t).Queue()

	rows2 := limitsOf(storage.QueueLimits{MaxRows: 2, DedupeWindow: time.Hour})
	wantResults(t, enqueue(ctx, t, q, rows2,
		origin(item("c.x", "s@x", "1", "<1/>"), "1"),
		origin(item("c.x", "s@x", "2", "<2/>"), "2"),
		origin(item("c.x", "s@x", "3", "<3/>"), "3"),
	), queued, queued, full)
	wantResults(t, enqueue(ctx, t, q, rows2, origin(item("c.x", "t@x", "4", "<4/>"), "4")), full)
	rows := list(ctx, t, q, "c.x", false)
	wantBodies(t, "List after Full", rows, "<1/>", "<2/>")
	// Limits are per component.
	wantResults(t, enqueue(ctx, t, q, rows2, origin(item("other.x", "s@x", "3", "<3/>"), "3")), queued)
	// Acking makes room; a Full item left no dedupe entry behind.
	ack(ctx, t, q, "c.x", rows[:1])
	wantResults(t, enqueue(ctx, t, q, rows2, origin(item("c.x", "s@x", "3", "<3/>"), "3")), queued)
	wantBodies(t, "List after ack", list(ctx, t, q, "c.x", false), "<2/>", "<3/>")

	// Bytes count len(Stanza); the limit itself is allowed.
	bytes10 := limitsOf(storage.QueueLimits{MaxBytes: 10})
	wantResults(t, enqueue(ctx, t, q, bytes10,
		item("b.x", "s@x", "", "aaaa"),
		item("b.x", "s@x", "", "bbbb"),
		item("b.x", "s@x", "", "cccc"),
		item("b.x", "s@x", "", "dd"),
	), queued, queued, full, queued)
	wantResults(t, enqueue(ctx, t, q, bytes10, item("b.x", "s@x", "", "e")), full)
	wantBodies(t, "List(bytes)", list(ctx, t, q, "b.x", false), "aaaa", "bbbb", "dd")
	if st := stats(ctx, t, q, "b.x"); st.Rows != 3 || st.Bytes != 10 {
		t.Fatalf("Stats after byte limit = %+v, want 3 rows, 10 bytes", st)
	}
}

func testStats(t *testing.T, f Factory) {
	ctx := testCtx(t)
	q := f.Open(t).Queue()

	if st := stats(ctx, t, q, "c1.x"); st != (storage.QueueStats{Component: "c1.x"}) {
		t.Fatalf("Stats(empty) = %+v, want zeros", st)
	}
	enqueue(ctx, t, q, noLimits,
		item("c1.x", "s1@x", "", "aaaa"),
		item("c1.x", "s2@x", "", "bb"),
		item("c1.x", "s1@x", "", "c"),
		item("c2.x", "s1@x", "", "dddddd"),
	)
	rows := list(ctx, t, q, "c1.x", false)
	st := stats(ctx, t, q, "c1.x")
	want := storage.QueueStats{Component: "c1.x", Rows: 3, Bytes: 7, Partitions: 2, Oldest: st.Oldest}
	if st != want || !st.Oldest.Equal(rows[0].Enqueued) {
		t.Fatalf("Stats(c1) = %+v, want %+v with Oldest %v", st, want, rows[0].Enqueued)
	}

	all, err := q.Stats(ctx, "")
	if err != nil {
		t.Fatalf("Stats(all): %v", err)
	}
	var names []string
	for _, s := range all {
		names = append(names, s.Component)
	}
	if !slices.IsSorted(names) || !slices.Contains(names, "c1.x") || !slices.Contains(names, "c2.x") {
		t.Fatalf("Stats(all) components = %q, want c1.x and c2.x, sorted", names)
	}
	for _, s := range all {
		if s.Component == "c2.x" && (s.Rows != 1 || s.Bytes != 6 || s.Partitions != 1) {
			t.Fatalf("Stats(all) entry for c2.x = %+v", s)
		}
	}

	got := claim(ctx, t, q, "c1.x", "A", time.Minute, 1, 10)
	if len(senders(got)) != 1 {
		t.Fatalf("Claim with maxPartitions 1 returned senders %q", senders(got))
	}
	if st := stats(ctx, t, q, "c1.x"); st.Leased != 1 || st.Rows != 3 {
		t.Fatalf("Stats after claim = %+v, want 1 leased, 3 rows", st)
	}

	n, err := q.Expire(ctx, "c1.x", time.Now().Add(time.Hour))
	if err != nil || n != 3 {
		t.Fatalf("Expire = %d, %v; want 3", n, err)
	}
	st = stats(ctx, t, q, "c1.x")
	if st.Rows != 0 || st.Bytes != 0 || st.Partitions != 0 || st.DeadLetters != 3 || !st.Oldest.IsZero() {
		t.Fatalf("Stats after expire = %+v, want no rows, 3 dead letters, zero Oldest", st)
	}
}

func testDeadLetters(t *testing.T, f Factory) {
	ctx := testCtx(t)
	q := f.Open(t).Queue()

	enqueue(ctx, t, q, noLimits,
		item("c.x", "s1@x", "1", "<r1/>"),
		item("c.x", "s2@x", "2", "<r2/>"),
		item("c.x", "s1@x", "3", "<r3/>"),
		item("other.x", "s1@x", "4", "<o/>"),
	)
	orig := list(ctx, t, q, "c.x", false)
	// Claimed rows expire like any other and keep their attempts.
	claim(ctx, t, q, "c.x", "A", time.Minute, 0, 100)

	if n, err := q.Expire(ctx, "c.x", time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("Expire(past) = %d, %v; want 0", n, err)
	}
	if n, err := q.Expire(ctx, "c.x", time.Now().Add(time.Hour)); err != nil || n != 3 {
		t.Fatalf("Expire(future) = %d, %v; want 3", n, err)
	}
	wantBodies(t, "alive after expire", list(ctx, t, q, "c.x", false))
	wantBodies(t, "other component after expire", list(ctx, t, q, "other.x", false), "<o/>")
	dead := list(ctx, t, q, "c.x", true)
	wantBodies(t, "dead", dead, "<r1/>", "<r2/>", "<r3/>")
	wantSortedIDs(t, "dead", dead)
	for i, d := range dead {
		o := orig[i]
		if d.Reason != "expired" || d.Attempts != 1 || d.Component != "c.x" || d.Sender != o.Sender ||
			d.From != o.From || d.StanzaID != o.StanzaID || !d.Enqueued.Equal(o.Enqueued) {
			t.Fatalf("dead letter %d = %+v, want %+v with Reason expired, Attempts 1", i, d, o)
		}
	}
	if got, err := q.List(ctx, "c.x", true, 1); err != nil || len(got) != 1 || got[0].ID != dead[0].ID {
		t.Fatalf("List(dead, limit 1) = %v, %v", ids(got), err)
	}

	// Replay one, then the rest: each sender's order is kept.
	if n, err := q.Replay(ctx, "c.x", []int64{dead[1].ID}); err != nil || n != 1 {
		t.Fatalf("Replay(r2) = %d, %v; want 1", n, err)
	}
	wantBodies(t, "dead after replay", list(ctx, t, q, "c.x", true), "<r1/>", "<r3/>")
	alive := list(ctx, t, q, "c.x", false)
	wantBodies(t, "alive after replay", alive, "<r2/>")
	if alive[0].Reason != "" {
		t.Fatalf("replayed row keeps Reason %q", alive[0].Reason)
	}
	if n, err := q.Replay(ctx, "c.x", []int64{alive[0].ID, 1 << 40}); err != nil || n != 0 {
		t.Fatalf("Replay(not dead) = %d, %v; want 0", n, err)
	}
	if n, err := q.Replay(ctx, "c.x", nil); err != nil || n != 2 {
		t.Fatalf("Replay(all) = %d, %v; want 2", n, err)
	}
	alive = list(ctx, t, q, "c.x", false)
	wantBodies(t, "alive after replay all", alive, "<r2/>", "<r1/>", "<r3/>")
	wantSortedIDs(t, "alive after replay all", alive)
	wantBodies(t, "dead after replay all", list(ctx, t, q, "c.x", true))
	if st := stats(ctx, t, q, "c.x"); st.Rows != 3 || st.DeadLetters != 0 || st.Bytes != 15 {
		t.Fatalf("Stats after replay = %+v", st)
	}
	// Replayed rows are delivered like new ones, by sender order. A, which
	// had claimed the old rows, may still lease their (then empty)
	// partitions, so A claims them.
	got := claim(ctx, t, q, "c.x", "A", time.Minute, 0, 100)
	wantBodies(t, "claim after replay", got, "<r2/>", "<r1/>", "<r3/>")
	for _, it := range got {
		if it.Attempts != 2 {
			t.Fatalf("replayed row claimed again has Attempts %d, want 2 (1 kept + 1)", it.Attempts)
		}
	}

	// Drop.
	if n, err := q.Expire(ctx, "c.x", time.Now().Add(time.Hour)); err != nil || n != 3 {
		t.Fatalf("Expire again = %d, %v; want 3", n, err)
	}
	dead = list(ctx, t, q, "c.x", true)
	if n, err := q.Drop(ctx, "c.x", []int64{dead[0].ID}); err != nil || n != 1 {
		t.Fatalf("Drop(one) = %d, %v; want 1", n, err)
	}
	if n, err := q.Drop(ctx, "c.x", []int64{dead[0].ID, 1 << 40}); err != nil || n != 0 {
		t.Fatalf("Drop(gone) = %d, %v; want 0", n, err)
	}
	if n, err := q.Drop(ctx, "c.x", nil); err != nil || n != 2 {
		t.Fatalf("Drop(all) = %d, %v; want 2", n, err)
	}
	wantBodies(t, "dead after drop", list(ctx, t, q, "c.x", true))
	if st := stats(ctx, t, q, "c.x"); st.DeadLetters != 0 || st.Rows != 0 {
		t.Fatalf("Stats after drop = %+v", st)
	}
	wantBodies(t, "other component untouched", list(ctx, t, q, "other.x", false), "<o/>")
}

func testSubscribe(t *testing.T, f Factory) {
	ctx := testCtx(t)
	q := f.Open(t).Queue()

	ch1, cancel1 := q.Subscribe("c.x")
	defer cancel1()
	ch2, cancel2 := q.Subscribe("c.x")
	defer cancel2()

	wait := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("no signal on %s within 5s", what)
		}
	}
	drain := func(ch <-chan struct{}) {
		for {
			select {
			case <-ch:
			default:
				return
			}
		}
	}

	enqueue(ctx, t, q, noLimits, item("c.x", "s@x", "", "<1/>"))
	wait("first subscriber", ch1)
	wait("second subscriber", ch2)

	// Signals coalesce: several commits, at least one signal, never a block.
	for range 3 {
		enqueue(ctx, t, q, noLimits, item("c.x", "s@x", "", "<n/>"))
	}
	wait("coalesced signal", ch1)

	cancel1()
	cancel1() // idempotent
	drain(ch1)
	drain(ch2)
	enqueue(ctx, t, q, noLimits, item("c.x", "s@x", "", "<after cancel/>"))
	wait("remaining subscriber", ch2)
	select {
	case <-ch1:
		t.Fatal("signal after cancel")
	case <-time.After(200 * time.Millisecond):
	}
}
