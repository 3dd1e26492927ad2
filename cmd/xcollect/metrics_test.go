package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/internal/testutil"
)

const metricsToken = "metrics-test-token-0123456789"

// startMetricsNode starts a node like startCLINode, with the HTTP
// listener on and the admin token set; public_metrics is appended to the
// http section when public is true. It returns the node and its HTTP
// address.
func startMetricsNode(t *testing.T, public bool) (cliNode, string) {
	t.Helper()
	n, httpAddr, _, _ := startHTTPNode(t, public)
	return n, httpAddr
}

// startHTTPNode is startMetricsNode that also returns the configuration
// file and a stop function (idempotent; cleanup calls it too); extra is
// appended to the file (top-level YAML).
func startHTTPNode(t *testing.T, public bool, extra ...string) (cliNode, string, string, func()) {
	t.Helper()
	dir := t.TempDir()
	n := cliNode{c2s: testutil.FreeAddr(t), comp: testutil.FreeAddr(t)}
	httpAddr := testutil.FreeAddr(t)
	cfg := filepath.Join(dir, "x.yaml")
	yaml := fmt.Sprintf("node: {name: metrics}\ndomains: [localhost]\ndata_dir: %q\nlog: {level: info, format: json}\n"+
		"listeners: {c2s: %q, c2s_tls: \"\", component: %q, http: %q}\ntls: {require: false}\n"+
		"http: {admin_token: %q, public_metrics: %v}\n"+
		"components:\n  - jid: collector.localhost\n    secret: sec\n%s", dir, n.c2s, n.comp, httpAddr, metricsToken, public, strings.Join(extra, ""))
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, e, code := runCLI(t, "", "user", "add", "dev1@localhost", "--password", "pw", "--config", cfg); code != 0 {
		t.Fatalf("user add: %s", e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testutil.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- cmdServe(ctx, []string{"--config", cfg}, logs, logs) }()
	var stopped bool
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	}
	t.Cleanup(stop)
	testutil.WaitFor(t, 30*time.Second, "node start", func() bool { return strings.Contains(logs.String(), "xcollect node started") })
	return n, httpAddr, cfg, stop
}

// getMetrics fetches /metrics with token ("" = none) and returns the
// status and body.
func getMetrics(t *testing.T, addr, token string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return resp.StatusCode, string(body)
}

// scrape is one parsed /metrics answer.
type scrape map[string]*dto.MetricFamily

func scrapeNode(t *testing.T, addr string) (scrape, string) {
	t.Helper()
	code, body := getMetrics(t, addr, metricsToken)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics with the token: %d %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams, body
}

// value returns the value of family name's series whose labels include
// labels (name=value pairs); a histogram gives its sample count. ok is
// false when there is no such series.
func (s scrape) value(name string, labels ...string) (float64, bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// sum adds the values of every series of family name whose labels include
// labels.
func (s scrape) sum(name string, labels ...string) float64 {
	f := s[name]
	if f == nil {
		return 0
	}
	total := 0.0
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
			}
			if !found {
				continue next
			}
		}
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return total
}

func (s scrape) must(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.value(name, labels...)
	if !ok {
		t.Fatalf("no series %s%v in /metrics", name, labels)
	}
	return v
}

// promtoolCheck runs `promtool check metrics` on body. promtool comes
// with Debian's prometheus package (scripts/test-deps.sh installs it);
// without it the test fails rather than passing unchecked.
func promtoolCheck(t *testing.T, body string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (apt-get install prometheus, or run scripts/test-deps.sh): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
}

const collector = "collector.localhost"

// TestMetricsMoveWithTraffic scrapes a running node before and after
// reports and a processor, checks that the numbers move as they must,
// and that promtool accepts the output.
func TestMetricsMoveWithTraffic(t *testing.T) {
	n, httpAddr := startMetricsNode(t, false)
	if code, _ := getMetrics(t, httpAddr, ""); code != http.StatusUnauthorized {
		t.Fatalf("GET /metrics without the token: %d, want 401", code)
	}
	if code, _ := getMetrics(t, httpAddr, "wrong-token-0123456789"); code != http.StatusUnauthorized {
		t.Fatalf("GET /metrics with a wrong token: %d, want 401", code)
	}
	before, body := scrapeNode(t, httpAddr)
	promtoolCheck(t, body)
	if v := before.must(t, "xcollect_queue_rows", "component", collector); v != 0 {
		t.Fatalf("queue rows before any report = %v", v)
	}
	if v := before.must(t, "xcollect_component_connections", "component", collector); v != 0 {
		t.Fatalf("connections before any processor = %v", v)
	}
	if _, ok := before.value("go_goroutines"); !ok {
		t.Fatal("no Go runtime metrics")
	}
	if _, ok := before.value("xcollect_cluster_members"); ok {
		t.Fatal("cluster members reported on a single node")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const reports = 3
	for i := range reports {
		var out, errb bytes.Buffer
		err := cmdReport(ctx, []string{"--addr", n.c2s, "--jid", "dev1@localhost", "--password", "pw",
			"--to", collector, "--payload", fmt.Sprintf("<temp xmlns='urn:x'>%d</temp>", i), "--insecure"}, &out, &errb)
		if err != nil {
			t.Fatalf("report %d: %v\n%s", i, err, errb.String())
		}
	}
	// One device with a wrong password.
	var out, errb bytes.Buffer
	if err := cmdReport(ctx, []string{"--addr", n.c2s, "--jid", "dev1@localhost", "--password", "wrong",
		"--to", collector, "--payload", "<x xmlns='urn:x'/>", "--insecure"}, &out, &errb); err == nil {
		t.Fatal("a report with a wrong password was accepted")
	}
	// A client asking for a domain the node does not serve gets a
	// host-unknown stream error.
	raw, err := net.DialTimeout("tcp", n.c2s, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = raw.Write([]byte("<?xml version='1.0'?><stream:stream to='elsewhere.example' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"))
	_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	answer, _ := io.ReadAll(raw)
	raw.Close()
	if !strings.Contains(string(answer), "host-unknown") {
		t.Fatalf("answer to an unserved domain: %q", answer)
	}
	time.Sleep(20 * time.Millisecond) // let the oldest row age measurably
	queued, body := scrapeNode(t, httpAddr)
	if v := queued.must(t, "xcollect_stream_errors_by_condition_total", "condition", "host-unknown"); v != 1 {
		t.Fatalf("host-unknown stream errors = %v, want 1", v)
	}
	if ok, failed := queued.sum("xcollect_logins_total", "result", "success"), queued.sum("xcollect_logins_total", "result", "failure"); ok != reports || failed < 1 {
		t.Fatalf("logins: %v succeeded, %v failed; want %d and at least 1", ok, failed, reports)
	}
	if _, ok := queued.value("xcollect_logins_total", "mechanism", "PLAIN", "result", "failure"); !ok {
		t.Fatal("no series for PLAIN failures (every mechanism has its series)")
	}
	promtoolCheck(t, body)
	if v := queued.must(t, "xcollect_queue_rows", "component", collector); v != reports {
		t.Fatalf("queue rows after %d reports = %v", reports, v)
	}
	if v := queued.must(t, "xcollect_queue_bytes", "component", collector); v <= 0 {
		t.Fatalf("queue bytes = %v", v)
	}
	if v := queued.must(t, "xcollect_queue_oldest_age_seconds", "component", collector); v <= 0 || v > 60 {
		t.Fatalf("oldest age = %v s", v)
	}
	if v := queued.must(t, "xcollect_queue_enqueued_total", "component", collector, "result", "queued"); v != reports {
		t.Fatalf("enqueued (queued) = %v, want %d", v, reports)
	}
	if v := queued.must(t, "xcollect_queue_commit_batch_size"); v < 1 || v > reports {
		t.Fatalf("group commits counted = %v, want 1..%d", v, reports)
	}
	if v := queued.must(t, "xcollect_queue_commit_seconds"); v < 1 {
		t.Fatalf("commit latency samples = %v", v)
	}
	if in0, in1 := before.must(t, "xcollect_stanzas_in_total"), queued.must(t, "xcollect_stanzas_in_total"); in1 < in0+reports {
		t.Fatalf("stanzas in went from %v to %v after %d reports", in0, in1, reports)
	}

	pctx, pcancel := context.WithCancel(ctx)
	pout, perr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- cmdProcess(pctx, []string{"--addr", n.comp, "--jid", collector, "--secret", "sec"}, pout, perr)
	}()
	testutil.WaitFor(t, 30*time.Second, "the reports at the processor", func() bool { return strings.Count(pout.String(), "\n") >= reports })
	var drained scrape
	testutil.WaitFor(t, 30*time.Second, "the queue drained and acked in /metrics", func() bool {
		drained, _ = scrapeNode(t, httpAddr)
		rows, _ := drained.value("xcollect_queue_rows", "component", collector)
		acked, _ := drained.value("xcollect_queue_acked_total", "component", collector)
		return rows == 0 && acked == reports
	})
	if v := drained.must(t, "xcollect_queue_delivered_total", "component", collector); v < reports {
		t.Fatalf("delivered = %v, want >= %d", v, reports)
	}
	if v := drained.must(t, "xcollect_component_connections", "component", collector); v != 1 {
		t.Fatalf("connections while the processor runs = %v", v)
	}
	if v := drained.must(t, "xcollect_queue_oldest_age_seconds", "component", collector); v != 0 {
		t.Fatalf("oldest age of an empty queue = %v", v)
	}
	pcancel()
	if err := <-done; err != nil {
		t.Fatalf("process: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, "the processor's connection gone from /metrics", func() bool {
		s, _ := scrapeNode(t, httpAddr)
		v, _ := s.value("xcollect_component_connections", "component", collector)
		return v == 0
	})
	for name := range drained {
		if strings.Contains(name, "user") || strings.Contains(name, "jid") {
			t.Errorf("metric %s looks per-user", name)
		}
		for _, m := range drained[name].GetMetric() {
			for _, lp := range m.GetLabel() {
				if strings.Contains(lp.GetValue(), "dev1") {
					t.Errorf("metric %s has a per-user label %s=%s", name, lp.GetName(), lp.GetValue())
				}
			}
		}
	}
}

// TestPublicMetrics: with http.public_metrics /metrics needs no token,
// and /v1/status still does.
func TestPublicMetrics(t *testing.T) {
	_, httpAddr := startMetricsNode(t, true)
	code, body := getMetrics(t, httpAddr, "")
	if code != http.StatusOK || !strings.Contains(body, "xcollect_queue_rows") {
		t.Fatalf("public /metrics: %d %.200s", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/v1/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/v1/status without the token: %d, want 401", resp.StatusCode)
	}
}

// TestMetricsOnPostgres: a node on Postgres reports its pool, and the
// queue series come from the shared queue.
func TestMetricsOnPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	n, httpAddr, _, _ := startHTTPNode(t, false, fmt.Sprintf("storage: {postgres: {dsn: %q}}\n", dsn))
	before, _ := scrapeNode(t, httpAddr)
	if v := before.must(t, "xcollect_postgres_pool_max_connections"); v < 1 {
		t.Fatalf("pool size = %v", v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reportOnce(t, ctx, n, "<t xmlns='urn:x'/>")
	after, body := scrapeNode(t, httpAddr)
	promtoolCheck(t, body)
	if a, b := after.must(t, "xcollect_postgres_pool_acquires_total"), before.must(t, "xcollect_postgres_pool_acquires_total"); a <= b {
		t.Fatalf("pool acquires did not move: %v → %v", b, a)
	}
	if v := after.must(t, "xcollect_queue_rows", "component", collector); v != 1 {
		t.Fatalf("queue rows on Postgres = %v", v)
	}
}
