package storetest

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"xcollect.dev/xcollect/storage"
)

// testIterations keeps SCRAM derivation cheap in tests.
const testIterations = 64

func mustCred(t *testing.T, password string) storage.Credentials {
	t.Helper()
	c, err := storage.NewCredentials(password, testIterations)
	if err != nil {
		t.Fatalf("NewCredentials: %v", err)
	}
	return c
}

func testUsers(t *testing.T, f Factory) {
	ctx := testCtx(t)
	s := f.Open(t)
	u := s.Users()

	cred := mustCred(t, "secret")
	if err := u.CreateUser(ctx, "a@x", cred); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if err := u.CreateUser(ctx, "a@x", mustCred(t, "other")); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("CreateUser twice: err = %v, want ErrExists", err)
	}
	got, err := u.GetCredentials(ctx, "a@x")
	if err != nil {
		t.Fatalf("GetCredentials: %v", err)
	}
	if !reflect.DeepEqual(got, cred) {
		t.Fatalf("GetCredentials = %+v, want %+v", got, cred)
	}
	if !got.Verify("secret") || got.Verify("wrong") {
		t.Fatal("stored credentials do not verify the password they were made from (and only it)")
	}
	if _, err := u.GetCredentials(ctx, "nobody@x"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetCredentials(unknown): err = %v, want ErrNotFound", err)
	}

	if err := u.SetCredentials(ctx, "a@x", mustCred(t, "changed")); err != nil {
		t.Fatalf("SetCredentials: %v", err)
	}
	got, err = u.GetCredentials(ctx, "a@x")
	if err != nil {
		t.Fatalf("GetCredentials after set: %v", err)
	}
	if !got.Verify("changed") || got.Verify("secret") {
		t.Fatal("SetCredentials did not replace the password")
	}
	if err := u.SetCredentials(ctx, "nobody@x", cred); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("SetCredentials(unknown): err = %v, want ErrNotFound", err)
	}

	// Domain isolation: a@x, a@y and a@xy are different accounts of
	// different domains.
	for _, user := range []string{"c@x", "b@x", "a@y", "a@xy"} {
		if err := u.CreateUser(ctx, user, cred); err != nil {
			t.Fatalf("CreateUser(%s): %v", user, err)
		}
	}
	wantUsers := func(domain string, want ...string) {
		t.Helper()
		got, err := u.ListUsers(ctx, domain)
		if err != nil {
			t.Fatalf("ListUsers(%s): %v", domain, err)
		}
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("ListUsers(%s) = %q, want %q", domain, got, want)
		}
	}
	wantUsers("x", "a@x", "b@x", "c@x")
	wantUsers("y", "a@y")
	wantUsers("xy", "a@xy")
	wantUsers("z")

	// DeleteUser takes the roster and the offline messages with it, and
	// nothing of other accounts.
	for _, owner := range []string{"a@x", "b@x"} {
		if err := s.Rosters().PutRosterItem(ctx, owner, storage.RosterItem{JID: "c@x", Subscription: storage.SubBoth}); err != nil {
			t.Fatalf("PutRosterItem: %v", err)
		}
		if err := s.Offline().StoreOffline(ctx, owner, []byte("<message/>"), 0); err != nil {
			t.Fatalf("StoreOffline: %v", err)
		}
	}
	if err := u.DeleteUser(ctx, "a@x"); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if _, err := u.GetCredentials(ctx, "a@x"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetCredentials after delete: err = %v, want ErrNotFound", err)
	}
	if err := u.DeleteUser(ctx, "a@x"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("DeleteUser twice: err = %v, want ErrNotFound", err)
	}
	wantUsers("x", "b@x", "c@x")
	wantUsers("y", "a@y")
	for owner, want := range map[string]int{"a@x": 0, "b@x": 1} {
		r, err := s.Rosters().GetRoster(ctx, owner)
		if err != nil {
			t.Fatalf("GetRoster(%s): %v", owner, err)
		}
		if len(r) != want {
			t.Fatalf("GetRoster(%s) after deleting a@x has %d items, want %d", owner, len(r), want)
		}
		m, err := s.Offline().FetchOffline(ctx, owner, time.Time{})
		if err != nil {
			t.Fatalf("FetchOffline(%s): %v", owner, err)
		}
		if len(m) != want {
			t.Fatalf("FetchOffline(%s) after deleting a@x has %d messages, want %d", owner, len(m), want)
		}
	}
	// The name is free again.
	if err := u.CreateUser(ctx, "a@x", cred); err != nil {
		t.Fatalf("CreateUser after delete: %v", err)
	}
}

// sameItem compares roster items, treating nil and empty Groups alike.
func sameItem(a, b storage.RosterItem) bool {
	if len(a.Groups) == 0 && len(b.Groups) == 0 {
		a.Groups, b.Groups = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

func testRosters(t *testing.T, f Factory) {
	ctx := testCtx(t)
	s := f.Open(t)
	r := s.Rosters()

	items := []storage.RosterItem{
		{JID: "carol@x", Name: "Carol", Subscription: storage.SubTo, Groups: []string{"Friends", "Work"}},
		{JID: "alice@x", Subscription: storage.SubNone, Ask: true},
		{JID: "bob@y", Name: "Bob", Subscription: storage.SubFrom, PendingIn: true, Groups: []string{"Work"}},
	}
	for _, it := range items {
		if err := r.PutRosterItem(ctx, "owner@x", it); err != nil {
			t.Fatalf("PutRosterItem(%s): %v", it.JID, err)
		}
	}
	// Another owner whose name starts the same must not leak in.
	if err := r.PutRosterItem(ctx, "owner@xy", storage.RosterItem{JID: "zed@x", Subscription: storage.SubBoth}); err != nil {
		t.Fatalf("PutRosterItem: %v", err)
	}

	wantRoster := func(owner string, want ...storage.RosterItem) {
		t.Helper()
		got, err := r.GetRoster(ctx, owner)
		if err != nil {
			t.Fatalf("GetRoster(%s): %v", owner, err)
		}
		if len(got) != len(want) {
			t.Fatalf("GetRoster(%s) = %+v, want %+v", owner, got, want)
		}
		for i := range got {
			if !sameItem(got[i], want[i]) {
				t.Fatalf("GetRoster(%s)[%d] = %+v, want %+v", owner, i, got[i], want[i])
			}
		}
	}
	wantRoster("owner@x", items[1], items[2], items[0])
	wantRoster("nobody@x")

	got, ok, err := r.GetRosterItem(ctx, "owner@x", "bob@y")
	if err != nil || !ok || !sameItem(got, items[2]) {
		t.Fatalf("GetRosterItem(bob@y) = %+v, %v, %v; want %+v", got, ok, err, items[2])
	}
	if _, ok, err := r.GetRosterItem(ctx, "owner@x", "zed@x"); err != nil || ok {
		t.Fatalf("GetRosterItem(absent) ok=%v err=%v, want false, nil", ok, err)
	}

	// Put replaces.
	repl := storage.RosterItem{JID: "bob@y", Name: "Robert", Subscription: storage.SubBoth}
	if err := r.PutRosterItem(ctx, "owner@x", repl); err != nil {
		t.Fatalf("PutRosterItem(replace): %v", err)
	}
	wantRoster("owner@x", items[1], repl, items[0])

	if err := r.DeleteRosterItem(ctx, "owner@x", "alice@x"); err != nil {
		t.Fatalf("DeleteRosterItem: %v", err)
	}
	if err := r.DeleteRosterItem(ctx, "owner@x", "alice@x"); err != nil {
		t.Fatalf("DeleteRosterItem(absent): %v", err)
	}
	wantRoster("owner@x", repl, items[0])
	wantRoster("owner@xy", storage.RosterItem{JID: "zed@x", Subscription: storage.SubBoth})
}

func testOffline(t *testing.T, f Factory) {
	ctx := testCtx(t)
	s := f.Open(t)
	o := s.Offline()

	fetch := func(to string, notBefore time.Time) []storage.OfflineMessage {
		t.Helper()
		m, err := o.FetchOffline(ctx, to, notBefore)
		if err != nil {
			t.Fatalf("FetchOffline(%s): %v", to, err)
		}
		return m
	}
	store := func(to, body string, limit int) error {
		t.Helper()
		return o.StoreOffline(ctx, to, []byte(body), limit)
	}
	wantMsgs := func(what string, got []storage.OfflineMessage, want ...string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d messages, want %q", what, len(got), want)
		}
		for i := range got {
			if string(got[i].Stanza) != want[i] {
				t.Fatalf("%s: message %d = %q, want %q", what, i, got[i].Stanza, want[i])
			}
			if i > 0 && got[i].ID <= got[i-1].ID {
				t.Fatalf("%s: IDs not increasing", what)
			}
		}
	}

	before := time.Now()
	body := []byte("<message id='1'/>")
	if err := o.StoreOffline(ctx, "u@x", body, 0); err != nil {
		t.Fatalf("StoreOffline: %v", err)
	}
	body[1] = 'X' // the store must have copied it
	m := fetch("u@x", time.Time{})
	wantMsgs("first fetch", m, "<message id='1'/>")
	if m[0].To != "u@x" || m[0].ID <= 0 || !near(m[0].Stored, before, time.Now()) {
		t.Fatalf("stored message = %+v", m[0])
	}

	// Let the clock move so that notBefore can split the messages.
	waitElapsed(t, time.Now(), 5*time.Millisecond)
	for _, b := range []string{"<message id='2'/>", "<message id='3'/>"} {
		if err := store("u@x", b, 0); err != nil {
			t.Fatalf("StoreOffline: %v", err)
		}
	}
	if err := store("v@x", "<message id='v'/>", 0); err != nil {
		t.Fatalf("StoreOffline: %v", err)
	}
	m = fetch("u@x", time.Time{})
	wantMsgs("fetch all", m, "<message id='1'/>", "<message id='2'/>", "<message id='3'/>")
	if !m[0].Stored.Before(m[1].Stored) {
		t.Fatalf("message stored 5ms later has Stored %v, not after %v", m[1].Stored, m[0].Stored)
	}
	wantMsgs("fetch notBefore", fetch("u@x", m[1].Stored), "<message id='2'/>", "<message id='3'/>")
	wantMsgs("fetch future", fetch("u@x", time.Now().Add(time.Hour)))
	wantMsgs("fetch again (fetch does not remove)", fetch("u@x", time.Time{}), "<message id='1'/>", "<message id='2'/>", "<message id='3'/>")

	// Limit: three stored, limit 3 refuses, limit 4 accepts, 0 is no limit.
	if err := store("u@x", "<message id='4'/>", 3); !errors.Is(err, storage.ErrLimit) {
		t.Fatalf("StoreOffline over limit: err = %v, want ErrLimit", err)
	}
	if err := store("u@x", "<message id='4'/>", 4); err != nil {
		t.Fatalf("StoreOffline under limit: %v", err)
	}
	if err := store("u@x", "<message id='5'/>", 0); err != nil {
		t.Fatalf("StoreOffline without limit: %v", err)
	}
	// The limit is per user: v@x has one.
	if err := store("v@x", "<message id='v2'/>", 2); err != nil {
		t.Fatalf("StoreOffline(v@x) under its own limit: %v", err)
	}
	m = fetch("u@x", time.Time{})
	wantMsgs("after limit", m, "<message id='1'/>", "<message id='2'/>", "<message id='3'/>", "<message id='4'/>", "<message id='5'/>")

	if err := o.DeleteOffline(ctx, "u@x", m[1].ID); err != nil {
		t.Fatalf("DeleteOffline: %v", err)
	}
	wantMsgs("after delete", fetch("u@x", time.Time{}), "<message id='3'/>", "<message id='4'/>", "<message id='5'/>")
	wantMsgs("other user after delete", fetch("v@x", time.Time{}), "<message id='v'/>", "<message id='v2'/>")

	n, err := o.ExpireOffline(ctx, time.Now().Add(-time.Hour))
	if err != nil || n != 0 {
		t.Fatalf("ExpireOffline(past) = %d, %v; want 0", n, err)
	}
	if err := o.DeleteOffline(ctx, "u@x", m[2].ID); err != nil {
		t.Fatalf("DeleteOffline: %v", err)
	}
	n, err = o.ExpireOffline(ctx, time.Now().Add(time.Hour))
	if err != nil || n != 4 {
		t.Fatalf("ExpireOffline(future) = %d, %v; want 4", n, err)
	}
	wantMsgs("after expire", fetch("u@x", time.Time{}))
	wantMsgs("after expire", fetch("v@x", time.Time{}))
	// Counts were kept right: the limit sees an empty mailbox.
	if err := store("u@x", "<message id='6'/>", 1); err != nil {
		t.Fatalf("StoreOffline after expire with limit 1: %v", err)
	}
}
