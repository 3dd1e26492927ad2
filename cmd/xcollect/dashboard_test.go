package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/dashboard"
)

func get(t *testing.T, ctx context.Context, url, token string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp
}

// reportOnce sends one report as dev1 to the collector.
func reportOnce(t *testing.T, ctx context.Context, n cliNode, payload string) {
	t.Helper()
	var out, errb bytes.Buffer
	if err := cmdReport(ctx, []string{"--addr", n.c2s, "--jid", "dev1@localhost", "--password", "pw",
		"--to", collector, "--payload", payload, "--insecure"}, &out, &errb); err != nil {
		t.Fatalf("report: %v %s", err, errb.String())
	}
}

// TestDashboardEvents: the page is embedded and served without the token,
// the event stream only with it, and its events carry the live queue.
func TestDashboardEvents(t *testing.T) {
	n, httpAddr := startMetricsNode(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp := get(t, ctx, "http://"+httpAddr+"/ui/", "")
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "<title>xcollect dashboard</title>") || strings.Contains(string(page), "https://") {
		t.Fatalf("GET /ui/: %d %.300s", resp.StatusCode, page)
	}
	resp = get(t, ctx, "http://"+httpAddr+"/ui/app.js", "")
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ui/app.js: %d", resp.StatusCode)
	}
	resp = get(t, ctx, "http://"+httpAddr+"/ui/events", "")
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("events without the token: %d", resp.StatusCode)
	}
	reportOnce(t, ctx, n, "<t xmlns='urn:x'/>")
	resp = get(t, ctx, "http://"+httpAddr+"/ui/events", metricsToken)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var events []dashboard.Snapshot
	for len(events) < 2 && sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var s dashboard.Snapshot
			if err := json.Unmarshal([]byte(data), &s); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			events = append(events, s)
		}
	}
	if len(events) < 2 {
		t.Fatalf("got %d events: %v", len(events), sc.Err())
	}
	last := events[1]
	if !last.Time.After(events[0].Time) || last.Node != "metrics" || len(last.Components) != 1 ||
		last.Components[0].JID != collector || last.Components[0].Rows != 1 || last.Components[0].OldestSeconds <= 0 {
		t.Fatalf("events %+v", events)
	}
}

// TestDashboardInChromium loads /ui/ in headless Chromium (Debian's
// chromium; scripts/test-deps.sh installs it) against a node with
// reports waiting and a processor connected, checks that the page shows
// live numbers from several events, and saves docs/dashboard.png.
func TestDashboardInChromium(t *testing.T) {
	browser, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (apt-get install chromium, or run scripts/test-deps.sh): %v", err)
	}
	n, httpAddr := startMetricsNode(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for i := range 4 {
		reportOnce(t, ctx, n, fmt.Sprintf("<temp xmlns='urn:x'>%d</temp>", i))
	}
	url := "http://" + httpAddr + "/ui/#token=" + metricsToken
	profile := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
		defer rcancel()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
			"--user-data-dir=" + profile, "--window-size=1280,860"}
		cmd := exec.CommandContext(rctx, browser, append(append(base, args...), url)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
		}
		return out.String()
	}
	dom := run("--run-all-compositor-stages-before-draw", "--virtual-time-budget=4000", "--dump-dom")
	seq := regexp.MustCompile(`id="updated"[^>]*data-seq="(\d+)"`).FindStringSubmatch(dom)
	if seq == nil {
		t.Fatalf("no update counter in the DOM:\n%s", dom)
	}
	if got, _ := strconv.Atoi(seq[1]); got < 2 {
		t.Fatalf("the page rendered %d events, want live updates (>= 2):\n%s", got, dom)
	}
	row := regexp.MustCompile(`<tr data-component="collector\.localhost">.*?</tr>`).FindString(dom)
	if !strings.Contains(row, `<td class="num rows">4</td>`) || !strings.Contains(dom, `<div id="sessions" class="big">`) {
		t.Fatalf("component row %q does not show the 4 waiting reports:\n%s", row, dom)
	}
	if strings.Contains(dom, metricsToken) {
		t.Fatal("the token is in the DOM")
	}
	shot := filepath.Join("..", "..", "docs", "dashboard.png")
	abs, err := filepath.Abs(shot)
	if err != nil {
		t.Fatal(err)
	}
	run("--run-all-compositor-stages-before-draw", "--virtual-time-budget=4000", "--screenshot="+abs, "--hide-scrollbars")
	if fi, err := os.Stat(abs); err != nil || fi.Size() < 5000 {
		t.Fatalf("screenshot %s: %v", abs, err)
	}
}
