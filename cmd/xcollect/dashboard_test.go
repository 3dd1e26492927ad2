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
// live numbers from several events, and saves a screenshot (bin/dashboard.png;
// docs/dashboard.png with XCOLLECT_UPDATE_SCREENSHOT=1).
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
	page := startChromium(t, ctx, browser, "http://"+httpAddr+"/ui/#token="+metricsToken)
	// A little traffic while the page watches: 8 more reports, one every
	// 300 ms.
	traffic := make(chan error, 1)
	go func() { // owned by the test: waited for below
		for i := range 8 {
			time.Sleep(300 * time.Millisecond)
			var out, errb bytes.Buffer
			if err := cmdReport(ctx, []string{"--addr", n.c2s, "--jid", "dev1@localhost", "--password", "pw",
				"--to", collector, "--payload", fmt.Sprintf("<temp xmlns='urn:x'>%d</temp>", 10+i), "--insecure"}, &out, &errb); err != nil {
				traffic <- fmt.Errorf("report %d: %w: %s", i, err, errb.String())
				return
			}
		}
		traffic <- nil
	}()
	if err := <-traffic; err != nil {
		t.Fatal(err)
	}
	var seq int
	deadline := time.Now().Add(30 * time.Second)
	for seq < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("the page rendered %d events in 30 s, want live updates (>= 6):\n%s", seq, page.eval(t, "document.documentElement.outerHTML"))
		}
		time.Sleep(200 * time.Millisecond)
		seq, _ = strconv.Atoi(page.eval(t, "document.getElementById('updated').dataset.seq"))
	}
	dom := page.eval(t, "document.documentElement.outerHTML")
	row := regexp.MustCompile(`<tr data-component="collector\.localhost">.*?</tr>`).FindString(dom)
	if !strings.Contains(row, `<td class="num rows">12</td>`) {
		t.Fatalf("component row %q does not show the 12 waiting reports:\n%s", row, dom)
	}
	if got := page.eval(t, "document.getElementById('status').textContent"); got != "live" {
		t.Fatalf("status %q", got)
	}
	if got := page.eval(t, "document.getElementById('queued').textContent"); got != "12" {
		t.Fatalf("queued card %q", got)
	}
	if strings.Contains(dom, metricsToken) || strings.Contains(page.eval(t, "location.href"), metricsToken) {
		t.Fatal("the token is in the DOM or the address bar")
	}
	// The depth chart has a point per event, and the depth grew under the
	// page's eyes: the points are not all at one height.
	if pts := page.eval(t, "document.querySelector('svg.spark polyline').getAttribute('points').split(' ').length"); pts == "" || pts == "1" {
		t.Fatalf("chart points %q", pts)
	}
	if heights := page.eval(t, "new Set(document.querySelector('svg.spark polyline').getAttribute('points').split(' ').map(p => p.split(',')[1])).size"); heights == "1" {
		t.Fatal("the chart is flat although reports arrived while the page was open")
	}
	png := page.screenshot(t)
	// The screenshot goes to bin/ (ignored by git), so that make test leaves
	// the work tree as it was; XCOLLECT_UPDATE_SCREENSHOT=1 writes the one
	// the README shows, docs/dashboard.png.
	dir := filepath.Join("..", "..", "bin")
	if os.Getenv("XCOLLECT_UPDATE_SCREENSHOT") == "1" {
		dir = filepath.Join("..", "..", "docs")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot, err := filepath.Abs(filepath.Join(dir, "dashboard.png"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes), %d events rendered", shot, len(png), seq)
}
