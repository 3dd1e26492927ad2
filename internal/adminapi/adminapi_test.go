package adminapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/adminapi"
	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/embedded"
)

// node is an admin API over an embedded store (fsync on, as in
// production), reached through the Go client like the CLI does.
func node(t *testing.T) (*adminapi.Client, storage.Store, string) {
	t.Helper()
	store, err := embedded.Open(filepath.Join(t.TempDir(), "x.db"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h := adminapi.Handler(adminapi.Deps{Users: store.Users(), Queue: store.Queue(), Domains: []string{"example.com", "other.org"},
		Components: func() []adminapi.Component { return []adminapi.Component{{JID: "c.example.com", Connections: 2}} },
		Log:        zerolog.New(zerolog.NewTestWriter(t))})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return adminapi.NewHTTPClient(srv.URL, ""), store, srv.URL
}

func TestUsersPagingAndErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, store, base := node(t)
	var lines strings.Builder
	for i := range 25 {
		fmt.Fprintf(&lines, "{\"jid\":\"u%02d@example.com\",\"password\":\"pw%d\"}\n", i, i)
	}
	res, err := c.ImportUsers(ctx, strings.NewReader(lines.String()), false)
	if err != nil || res.Added != 25 || len(res.Failed) != 0 {
		t.Fatalf("import: %+v %v", res, err)
	}
	// Pages of 10 in order, the cursor ends on the last page.
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("paging does not end")
		}
		resp, err := http.Get(base + "/v1/admin/users?domain=example.com&limit=10&after=" + after)
		if err != nil {
			t.Fatal(err)
		}
		var page adminapi.UserPage
		err = jsonDecode(resp, &page)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page.Users...)
		if page.Next == "" {
			break
		}
		if len(page.Users) != 10 {
			t.Fatalf("page of %d users with a next cursor", len(page.Users))
		}
		after = page.Next
	}
	if len(got) != 25 || !slices.IsSorted(got) || got[0] != "u00@example.com" || got[24] != "u24@example.com" {
		t.Fatalf("paged users = %v", got)
	}
	all, err := c.ListUsers(ctx, "example.com")
	if err != nil || !slices.Equal(all, got) {
		t.Fatalf("client list = %v, %v", all, err)
	}
	cred, _ := storage.NewCredentials("x", 0)
	if err := c.CreateUser(ctx, "u01@example.com", cred); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("add existing: %v", err)
	}
	if err := c.CreateUser(ctx, "eve@elsewhere.net", cred); err == nil || !strings.Contains(err.Error(), "not served") {
		t.Fatalf("add on a foreign domain: %v", err)
	}
	if err := c.CreateUser(ctx, "example.com", cred); err == nil || !strings.Contains(err.Error(), "bare JID") {
		t.Fatalf("add without a local part: %v", err)
	}
	if err := c.SetCredentials(ctx, "nobody@example.com", cred); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("passwd of nobody: %v", err)
	}
	if err := c.SetCredentials(ctx, "u01@example.com", cred); err != nil {
		t.Fatal(err)
	}
	stored, err := store.Users().GetCredentials(ctx, "u01@example.com")
	if err != nil || !stored.Verify("x") || stored.Verify("pw1") {
		t.Fatalf("password not changed: %v", err)
	}
	if err := c.DeleteUser(ctx, "u01@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteUser(ctx, "u01@example.com"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	// A password given in the clear is hashed by the node.
	resp, err := http.Post(base+"/v1/admin/users", "application/json", strings.NewReader(`{"jid":"plain@other.org","password":"secret"}`))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("add with a password: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	if stored, err := store.Users().GetCredentials(ctx, "plain@other.org"); err != nil || !stored.Verify("secret") {
		t.Fatalf("plain password: %v", err)
	}
	comps, err := c.Components(ctx)
	if err != nil || len(comps) != 1 || comps[0].Connections != 2 {
		t.Fatalf("components = %+v, %v", comps, err)
	}
	if members, err := c.Members(ctx); err != nil || len(members) != 0 {
		t.Fatalf("members on a single node = %+v, %v", members, err)
	}
}

// TestImportCSVReportsBadLines: the bad lines are named, the good ones
// added, an existing account is left as it was.
func TestImportCSVReportsBadLines(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, store, _ := node(t)
	cred, _ := storage.NewCredentials("old", 0)
	if err := store.Users().CreateUser(ctx, "kept@example.com", cred); err != nil {
		t.Fatal(err)
	}
	csv := "jid,password\na@example.com,pa\nkept@example.com,new\nb@nowhere.net,pb\nc@example.com\n\"d@example.com\",\"p,d\"\ne@example.com,\n"
	res, err := c.ImportUsers(ctx, strings.NewReader(csv), true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Added != 2 || res.Existed != 1 || len(res.Failed) != 3 {
		t.Fatalf("result %+v", res)
	}
	if lines := []int{res.Failed[0].Line, res.Failed[1].Line, res.Failed[2].Line}; !slices.Equal(lines, []int{4, 5, 7}) {
		t.Fatalf("failed lines %v (%+v)", lines, res.Failed)
	}
	if got, _ := store.Users().GetCredentials(ctx, "kept@example.com"); !got.Verify("old") {
		t.Fatal("import changed an existing password")
	}
	if got, err := store.Users().GetCredentials(ctx, "d@example.com"); err != nil || !got.Verify("p,d") {
		t.Fatalf("quoted CSV password: %v", err)
	}
}

// TestImportConcurrentPipeline: a thousand accounts through the API's
// import (hashers and writers in parallel; run with -race by make test)
// all land with their passwords. The 10,000-in-30-s bar is checked on the
// real binary: cmd/xcollect TestUserImportTenThousand.
func TestImportConcurrentPipeline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c, store, _ := node(t)
	var lines strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&lines, "{\"jid\":\"dev%05d@example.com\",\"password\":\"pw-%d\"}\n", i, i)
	}
	res, err := c.ImportUsers(ctx, strings.NewReader(lines.String()), false)
	if err != nil || res.Added != 1000 || res.Existed != 0 || len(res.Failed) != 0 {
		t.Fatalf("import: %+v %v", res, err)
	}
	list, err := store.Users().ListUsers(ctx, "example.com")
	if err != nil || len(list) != 1000 {
		t.Fatalf("stored %d accounts, %v", len(list), err)
	}
	for _, i := range []int{0, 517, 999} {
		u := fmt.Sprintf("dev%05d@example.com", i)
		if got, err := store.Users().GetCredentials(ctx, u); err != nil || !got.Verify(fmt.Sprintf("pw-%d", i)) {
			t.Fatalf("%s: %v", u, err)
		}
	}
	// The same file again: every account exists, none changes.
	res, err = c.ImportUsers(ctx, strings.NewReader(lines.String()), false)
	if err != nil || res.Added != 0 || res.Existed != 1000 {
		t.Fatalf("second import: %+v %v", res, err)
	}
}

func TestQueueEndpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, store, _ := node(t)
	q := store.Queue()
	items := []storage.QueueItem{
		{Component: "c.example.com", Sender: "a@example.com", From: "a@example.com/r", StanzaID: "s1", Stanza: []byte("<message id='s1'/>")},
		{Component: "c.example.com", Sender: "b@example.com", From: "b@example.com/r", StanzaID: "s2", Stanza: []byte("<message id='s2'/>")},
	}
	if _, err := q.Enqueue(ctx, items, func(string) storage.QueueLimits { return storage.QueueLimits{} }); err != nil {
		t.Fatal(err)
	}
	st, err := c.QueueStats(ctx, "c.example.com")
	if err != nil || len(st) != 1 || st[0].Rows != 2 || st[0].Senders != 2 || st[0].Oldest.IsZero() {
		t.Fatalf("stats = %+v, %v", st, err)
	}
	direct, err := adminapi.StoreQueues{Q: q}.QueueStats(ctx, "c.example.com")
	if err != nil || len(direct) != 1 || direct[0] != st[0] && !direct[0].Oldest.Equal(st[0].Oldest) {
		t.Fatalf("the store directly says %+v, the API %+v", direct, st)
	}
	rows, err := c.QueueList(ctx, "c.example.com", false, 10)
	if err != nil || len(rows) != 2 || rows[0].StanzaID != "s1" || rows[0].Bytes != len(items[0].Stanza) {
		t.Fatalf("list = %+v, %v", rows, err)
	}
	if n, err := q.Expire(ctx, "c.example.com", time.Now().Add(time.Minute)); err != nil || n != 2 {
		t.Fatalf("expire %d %v", n, err)
	}
	dead, err := c.QueueList(ctx, "c.example.com", true, 10)
	if err != nil || len(dead) != 2 || dead[0].Reason == "" {
		t.Fatalf("dead letters = %+v, %v", dead, err)
	}
	if n, err := c.QueueReplay(ctx, "c.example.com", []int64{dead[0].ID}); err != nil || n != 1 {
		t.Fatalf("replay one: %d %v", n, err)
	}
	if n, err := c.QueueDrop(ctx, "c.example.com", nil); err != nil || n != 1 {
		t.Fatalf("drop all: %d %v", n, err)
	}
	st, err = c.QueueStats(ctx, "c.example.com")
	if err != nil || st[0].Rows != 1 || st[0].DeadLetters != 0 {
		t.Fatalf("stats after replay and drop = %+v, %v", st, err)
	}
}
