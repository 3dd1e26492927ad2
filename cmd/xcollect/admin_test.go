package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/clients/reporter"
	"xcollect.dev/xcollect/internal/adminapi"
	"xcollect.dev/xcollect/internal/config"
	"xcollect.dev/xcollect/storage"

	"xcollect.dev/xcollect/internal/testutil"
)

// TestAdminCommandsAgainstARunningNode: the user and queue commands work
// while a node holds the embedded store (through its admin socket), fast,
// and print the same as against the stopped node.
func TestAdminCommandsAgainstARunningNode(t *testing.T) {
	n, httpAddr, cfg, stop := startHTTPNode(t, false)
	start := time.Now()
	const adds = 5
	for i := range adds {
		if _, e, code := runCLI(t, "", "user", "add", fmt.Sprintf("fast%d@localhost", i), "--password", "pw", "--config", cfg); code != 0 {
			t.Fatalf("user add on a running node: %d %s", code, e)
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("%d user adds took %v (the embedded store's lock wait is 1 s each)", adds, took)
	}
	out, e, code := runCLI(t, "", "user", "list", "--config", cfg)
	if code != 0 || !strings.Contains(out, "fast4@localhost\n") || !strings.Contains(e, "admin socket") {
		t.Fatalf("user list: %d %q %q", code, out, e)
	}
	if _, e, code := runCLI(t, "", "user", "add", "fast0@localhost", "--password", "x", "--config", cfg); code == 0 || !strings.Contains(e, "already exists") {
		t.Fatalf("duplicate add through the socket: %d %s", code, e)
	}
	// Import through the socket.
	jsonl := filepath.Join(t.TempDir(), "users.jsonl")
	if err := os.WriteFile(jsonl, []byte(`{"jid":"imp1@localhost","password":"a"}`+"\n"+`{"jid":"imp2@localhost","password":"b"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, e, code := runCLI(t, "", "user", "import", jsonl, "--config", cfg); code != 0 || !strings.Contains(out, "2 added") {
		t.Fatalf("user import: %d %q %q", code, out, e)
	}
	// A report waits in the queue; queue stats sees it while the node runs.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rout, rerr bytes.Buffer
	if err := cmdReport(ctx, []string{"--addr", n.c2s, "--jid", "imp1@localhost", "--password", "a",
		"--to", collector, "--payload", "<t xmlns='urn:x'/>", "--insecure"}, &rout, &rerr); err != nil {
		t.Fatalf("report as an imported account: %v %s", err, rerr.String())
	}
	running, e, code := runCLI(t, "", "queue", "stats", "--config", cfg)
	if code != 0 || !strings.Contains(running, collector) {
		t.Fatalf("queue stats on a running node: %d %q %q", code, running, e)
	}
	fields := strings.Fields(strings.Split(running, "\n")[1])
	if fields[0] != collector || fields[1] != "1" {
		t.Fatalf("queue stats row %q, want 1 row for %s", fields, collector)
	}
	runningList, _, code := runCLI(t, "", "queue", "list", collector, "--config", cfg)
	if code != 0 || !strings.Contains(runningList, "imp1@localhost/") {
		t.Fatalf("queue list on a running node: %q", runningList)
	}

	// The admin API on the HTTP port: only with the token.
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"nope-nope-nope-nope", http.StatusUnauthorized}, {metricsToken, http.StatusOK}} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/v1/admin/queues", nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var st []adminapi.QueueStats
		if tc.want == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || len(st) == 0 || st[0].Rows != 1 {
				t.Fatalf("GET /v1/admin/queues: %+v %v", st, err)
			}
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("GET /v1/admin/queues with token %q: %d, want %d", tc.token, resp.StatusCode, tc.want)
		}
	}

	stop()
	stopped, e, code := runCLI(t, "", "queue", "stats", "--config", cfg)
	if code != 0 || strings.Contains(e, "admin socket") {
		t.Fatalf("queue stats on the stopped node: %d %q", code, e)
	}
	// OLDEST is an age and moves with the clock: compare without it.
	withoutAge := func(s string) string {
		var b strings.Builder
		for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
			f := strings.Fields(line)
			if len(f) == 7 {
				f[5] = "-"
			}
			b.WriteString(strings.Join(f, " ") + "\n")
		}
		return b.String()
	}
	if withoutAge(stopped) != withoutAge(running) {
		t.Fatalf("queue stats differ:\nrunning:\n%s\nstopped:\n%s", running, stopped)
	}
	if stoppedList, _, _ := runCLI(t, "", "queue", "list", collector, "--config", cfg); stoppedList != runningList {
		t.Fatalf("queue list differs:\nrunning:\n%s\nstopped:\n%s", runningList, stoppedList)
	}
	out, _, _ = runCLI(t, "", "user", "list", "--config", cfg)
	if !strings.Contains(out, "imp2@localhost\n") || !strings.Contains(out, "fast0@localhost\n") {
		t.Fatalf("user list on the stopped node: %q", out)
	}
}

// TestAdminSessionsListAndKick: a logged-in device shows up in the
// sessions list and is disconnected by a kick; kicking it again is a 404.
func TestAdminSessionsListAndKick(t *testing.T) {
	n, httpAddr, cfg, _ := startHTTPNode(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := reporter.New(reporter.Config{Addr: n.c2s, JID: "dev1@localhost", Password: "pw", Resource: "kickme",
		InsecureSkipVerify: true, MinBackoff: time.Minute, MaxBackoff: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	api := adminapi.NewHTTPClient("http://"+httpAddr, metricsToken)
	const full = "dev1@localhost/kickme"
	sessions, err := api.Sessions(ctx)
	if err != nil || !slices.Contains(sessions, full) {
		t.Fatalf("sessions = %v, %v", sessions, err)
	}
	if m, _ := scrapeNode(t, httpAddr); m.must(t, "xcollect_domain_sessions", "domain", "localhost") != 1 {
		t.Fatalf("xcollect_domain_sessions{domain=localhost} = %v with one device online", m.must(t, "xcollect_domain_sessions", "domain", "localhost"))
	}
	// The command, as an operator types it: the node is reached on its
	// admin socket.
	if out, e, code := runCLI(t, "", "session", "list", "--config", cfg); code != 0 || !strings.Contains(out, full+"\n") {
		t.Fatalf("session list: %d %q %q", code, out, e)
	}
	if out, e, code := runCLI(t, "", "session", "kick", full, "--config", cfg); code != 0 || out != "kicked: "+full+"\n" {
		t.Fatalf("session kick: %d %q %q", code, out, e)
	}
	testutil.WaitFor(t, 10*time.Second, "the kicked session gone", func() bool {
		s, err := api.Sessions(ctx)
		return err == nil && !slices.Contains(s, full)
	})
	if m, _ := scrapeNode(t, httpAddr); m.must(t, "xcollect_domain_sessions", "domain", "localhost") != 0 {
		t.Fatal("the kicked session is still counted by domain")
	}
	if err := api.Kick(ctx, full); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("kick of a session that is gone: %v", err)
	}
	if _, e, code := runCLI(t, "", "session", "kick", full, "--config", cfg); code == 0 || !strings.Contains(e, "no session") {
		t.Fatalf("session kick twice: %d %q", code, e)
	}
	if out, e, code := runCLI(t, "", "cluster", "members", "--config", cfg); code != 0 || !strings.Contains(out, "single node") {
		t.Fatalf("cluster members: %d %q %q", code, out, e)
	}
	if err := adminapi.NewHTTPClient("http://"+httpAddr, "").Kick(ctx, full); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("kick without the token: %v", err)
	}
}

// TestNodeClientFallsBackToHTTP: without an admin socket (a node on
// Postgres), the session and cluster commands reach the node on its HTTP
// port with the admin token, and say what is missing without one.
func TestNodeClientFallsBackToHTTP(t *testing.T) {
	_, _, cfg, _ := startHTTPNode(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.DataDir = t.TempDir() // no socket here
	c, err := nodeClient(ctx, f, io.Discard)
	if err != nil {
		t.Fatalf("over HTTP: %v", err)
	}
	if comps, err := c.Components(ctx); err != nil || len(comps) != 1 || comps[0].JID != collector {
		t.Fatalf("components over HTTP = %+v, %v", comps, err)
	}
	f.HTTP.AdminToken = "wrong-token-wrong-token"
	if _, err := nodeClient(ctx, f, io.Discard); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: %v", err)
	}
	f.HTTP.AdminToken = ""
	if _, err := nodeClient(ctx, f, io.Discard); err == nil || !strings.Contains(err.Error(), "http.admin_token") {
		t.Fatalf("no token: %v", err)
	}
}
