package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"xcollect.dev/xcollect/storage"
)

func testDurability(t *testing.T, f Factory) {
	if f.Reopen == nil {
		t.Fatal("storetest: Factory.Reopen is nil; every store must be reopenable to prove durability")
	}
	ctx := testCtx(t)
	s := f.Open(t)
	cred := mustCred(t, "secret")
	if err := s.Users().CreateUser(ctx, "u@x", cred); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if err := s.Offline().StoreOffline(ctx, "u@x", []byte("<message/>"), 0); err != nil {
		t.Fatalf("StoreOffline: %v", err)
	}
	if err := s.Rosters().PutRosterItem(ctx, "u@x", storage.RosterItem{JID: "v@x", Subscription: storage.SubBoth}); err != nil {
		t.Fatalf("PutRosterItem: %v", err)
	}
	dedupe := limitsOf(storage.QueueLimits{DedupeWindow: time.Hour})
	enqueue(ctx, t, s.Queue(), dedupe,
		origin(item("c.x", "s1@x", "1", "<1/>"), "1"),
		origin(item("c.x", "s2@x", "2", "<2/>"), "2"),
		origin(item("c.x", "s1@x", "3", "<3/>"), "3"),
	)
	before := list(ctx, t, s.Queue(), "c.x", false)
	if n, err := s.Queue().Expire(ctx, "c.x", time.Now().Add(time.Hour)); err != nil || n != 3 {
		t.Fatalf("Expire = %d, %v", n, err)
	}
	if n, err := s.Queue().Replay(ctx, "c.x", []int64{before[2].ID}); err != nil || n != 1 {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	alive := list(ctx, t, s.Queue(), "c.x", false)

	s = f.Reopen(t, s)
	q := s.Queue()
	if got := list(ctx, t, q, "c.x", false); !slices.Equal(ids(got), ids(alive)) || string(got[0].Stanza) != "<3/>" {
		t.Fatalf("queue after reopen = %v %q, want %v", ids(got), bodies(got), ids(alive))
	}
	wantBodies(t, "dead letters after reopen", list(ctx, t, q, "c.x", true), "<1/>", "<2/>")
	if st := stats(ctx, t, q, "c.x"); st.Rows != 1 || st.Bytes != 4 || st.DeadLetters != 2 {
		t.Fatalf("Stats after reopen = %+v", st)
	}
	got, err := s.Users().GetCredentials(ctx, "u@x")
	if err != nil || !got.Verify("secret") {
		t.Fatalf("credentials after reopen: %v", err)
	}
	if m, err := s.Offline().FetchOffline(ctx, "u@x", time.Time{}); err != nil || len(m) != 1 {
		t.Fatalf("offline after reopen: %d messages, %v", len(m), err)
	}
	if _, ok, err := s.Rosters().GetRosterItem(ctx, "u@x", "v@x"); err != nil || !ok {
		t.Fatalf("roster after reopen: ok=%v, %v", ok, err)
	}
	// Dedupe entries and the ID sequence survive too.
	wantResults(t, enqueue(ctx, t, q, dedupe, origin(item("c.x", "s1@x", "1", "<1 again/>"), "1"), origin(item("c.x", "s1@x", "4", "<4/>"), "4")), duplicate, queued)
	after := list(ctx, t, q, "c.x", false)
	if last := after[len(after)-1]; last.ID <= alive[0].ID {
		t.Fatalf("ID after reopen %d is not above %d", last.ID, alive[0].ID)
	}
}

func testClosed(t *testing.T, f Factory) {
	ctx := testCtx(t)
	s := f.Open(t)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checks := map[string]error{
		"Ping":          s.Ping(ctx),
		"CreateUser":    s.Users().CreateUser(ctx, "u@x", storage.Credentials{}),
		"StoreOffline":  s.Offline().StoreOffline(ctx, "u@x", []byte("<m/>"), 0),
		"PutRosterItem": s.Rosters().PutRosterItem(ctx, "u@x", storage.RosterItem{JID: "v@x"}),
	}
	_, checks["Enqueue"] = s.Queue().Enqueue(ctx, []storage.QueueItem{item("c.x", "s@x", "", "<m/>")}, noLimits)
	_, checks["Claim"] = s.Queue().Claim(ctx, "c.x", "A", time.Minute, 1, 1)
	_, checks["Stats"] = s.Queue().Stats(ctx, "")
	for op, err := range checks {
		if !errors.Is(err, storage.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", op, err)
		}
	}
}
