package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/storage"
)

// Factory makes the stores under test.
type Factory struct {
	// Open returns a new, empty store. It registers with t whatever cleanup
	// the store needs (closing it, dropping its data); closing a store that
	// the suite already closed must not fail the test.
	Open func(t *testing.T) storage.Store
	// Reopen closes s and opens the same underlying data again, as a restart
	// of the node would. Required: the durability case fails without it.
	Reopen func(t *testing.T, s storage.Store) storage.Store
}

// Run runs the contract suite against the stores f makes, one subtest per
// case, each on a fresh store from f.Open. Subtests run one after another.
func Run(t *testing.T, f Factory) {
	t.Helper()
	if f.Open == nil {
		t.Fatal("storetest: Factory.Open is nil")
	}
	t.Run("ping", func(t *testing.T) { testPing(t, f) })
	t.Run("users", func(t *testing.T) { testUsers(t, f) })
	t.Run("rosters", func(t *testing.T) { testRosters(t, f) })
	t.Run("offline", func(t *testing.T) { testOffline(t, f) })
	t.Run("queue", func(t *testing.T) {
		t.Run("enqueue", func(t *testing.T) { testEnqueue(t, f) })
		t.Run("dedupe", func(t *testing.T) { testDedupe(t, f) })
		t.Run("limits", func(t *testing.T) { testLimits(t, f) })
		t.Run("claim", func(t *testing.T) { testClaim(t, f) })
		t.Run("owners", func(t *testing.T) { testOwners(t, f) })
		t.Run("lease-expiry", func(t *testing.T) { testLeaseExpiry(t, f) })
		t.Run("release-prefix", func(t *testing.T) { testReleasePrefix(t, f) })
		t.Run("stats", func(t *testing.T) { testStats(t, f) })
		t.Run("dead-letters", func(t *testing.T) { testDeadLetters(t, f) })
		t.Run("subscribe", func(t *testing.T) { testSubscribe(t, f) })
		t.Run("concurrency", func(t *testing.T) { testConcurrency(t, f) })
	})
	t.Run("durability", func(t *testing.T) { testDurability(t, f) })
	t.Run("closed", func(t *testing.T) { testClosed(t, f) })
}

// caseTimeout bounds every case; a store that hangs fails instead.
const caseTimeout = 60 * time.Second

// clockSlack is how far a store's clock may be from the test's.
const clockSlack = time.Minute

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), caseTimeout)
	t.Cleanup(cancel)
	return ctx
}

// waitElapsed polls the clock until d has passed since start. It lets time
// pass for windows and leases; it synchronises nothing.
func waitElapsed(t *testing.T, start time.Time, d time.Duration) {
	t.Helper()
	testutil.WaitFor(t, d+10*time.Second, fmt.Sprintf("%v to pass", d), func() bool {
		return time.Since(start) > d
	})
}

func noLimits(string) storage.QueueLimits { return storage.QueueLimits{} }

func limitsOf(l storage.QueueLimits) func(string) storage.QueueLimits {
	return func(string) storage.QueueLimits { return l }
}

// item is a queue item of component from sender's resource "r".
func item(component, sender, stanzaID, body string) storage.QueueItem {
	return storage.QueueItem{
		Component: component,
		Sender:    sender,
		From:      sender + "/r",
		StanzaID:  stanzaID,
		Stanza:    []byte(body),
	}
}

// origin returns it with the sender-asserted origin id set (the dedupe key).
func origin(it storage.QueueItem, id string) storage.QueueItem {
	it.OriginID = id
	return it
}

func enqueue(ctx context.Context, t *testing.T, q storage.QueueStore, lim func(string) storage.QueueLimits, items ...storage.QueueItem) []storage.EnqueueResult {
	t.Helper()
	res, err := q.Enqueue(ctx, items, lim)
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if len(res) != len(items) {
		t.Fatalf("Enqueue returned %d results for %d items", len(res), len(items))
	}
	return res
}

func wantResults(t *testing.T, got []storage.EnqueueResult, want ...storage.EnqueueResult) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("Enqueue results = %v, want %v", got, want)
	}
}

func list(ctx context.Context, t *testing.T, q storage.QueueStore, component string, dead bool) []storage.QueueItem {
	t.Helper()
	items, err := q.List(ctx, component, dead, 0)
	if err != nil {
		t.Fatalf("List(%q, dead=%v): %v", component, dead, err)
	}
	return items
}

func claim(ctx context.Context, t *testing.T, q storage.QueueStore, component, owner string, lease time.Duration, maxPartitions, max int) []storage.QueueItem {
	t.Helper()
	items, err := q.Claim(ctx, component, owner, lease, maxPartitions, max)
	if err != nil {
		t.Fatalf("Claim(%q, %q): %v", component, owner, err)
	}
	return items
}

func ack(ctx context.Context, t *testing.T, q storage.QueueStore, component string, items []storage.QueueItem) {
	t.Helper()
	if err := q.Ack(ctx, component, ids(items)); err != nil {
		t.Fatalf("Ack(%q): %v", component, err)
	}
}

func stats(ctx context.Context, t *testing.T, q storage.QueueStore, component string) storage.QueueStats {
	t.Helper()
	st, err := q.Stats(ctx, component)
	if err != nil {
		t.Fatalf("Stats(%q): %v", component, err)
	}
	if len(st) != 1 || st[0].Component != component {
		t.Fatalf("Stats(%q) = %+v, want exactly one entry for it", component, st)
	}
	return st[0]
}

func ids(items []storage.QueueItem) []int64 {
	out := make([]int64, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

func bodies(items []storage.QueueItem) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = string(it.Stanza)
	}
	return out
}

func senders(items []storage.QueueItem) []string {
	var out []string
	for _, it := range items {
		if !slices.Contains(out, it.Sender) {
			out = append(out, it.Sender)
		}
	}
	slices.Sort(out)
	return out
}

func wantBodies(t *testing.T, what string, items []storage.QueueItem, want ...string) {
	t.Helper()
	if got := bodies(items); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Fatalf("%s: stanzas = %q, want %q", what, got, want)
	}
}

func wantSortedIDs(t *testing.T, what string, items []storage.QueueItem) {
	t.Helper()
	for i := 1; i < len(items); i++ {
		if items[i].ID <= items[i-1].ID {
			t.Fatalf("%s: IDs not increasing: %v", what, ids(items))
		}
	}
}

// near reports whether a store's timestamp is plausibly "now".
func near(ts time.Time, from, to time.Time) bool {
	return !ts.Before(from.Add(-clockSlack)) && !ts.After(to.Add(clockSlack))
}

func testPing(t *testing.T, f Factory) {
	ctx := testCtx(t)
	s := f.Open(t)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}
