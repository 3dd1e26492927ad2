package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/clients/reporter"
	"xcollect.dev/xcollect/internal/config"
	"xcollect.dev/xcollect/internal/testutil"
)

// TestHelpExitsZero asks every command and subcommand for --help, the way
// a newcomer does: help text and exit 0, nothing else happens (no store is
// opened, no file written).
func TestHelpExitsZero(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XCOLLECT_DATA_DIR", filepath.Join(dir, "data"))
	t.Setenv("XCOLLECT_CONFIG", "")
	for _, args := range [][]string{
		{"--help"}, {"help"}, {"-h"},
		{"serve", "--help"}, {"serve", "-h"},
		{"user", "--help"}, {"user", "add", "--help"}, {"user", "list", "-h"},
		{"queue", "--help"}, {"queue", "-h"}, {"queue", "help"}, {"queue", "stats", "--help"},
		{"component", "--help"}, {"component", "add", "--help"}, {"component", "remove", "--help"},
		{"session", "--help"}, {"session", "kick", "--help"}, {"cluster", "--help"}, {"cluster", "members", "-h"},
		{"migrate", "--help"}, {"report", "--help"}, {"process", "--help"}, {"healthcheck", "--help"},
	} {
		out, e, code := runCLI(t, "", args...)
		if code != 0 {
			t.Errorf("xcollect %s: exit %d, want 0\n%s%s", strings.Join(args, " "), code, out, e)
			continue
		}
		if !strings.Contains(out+e, "xcollect") {
			t.Errorf("xcollect %s: no help printed: %q %q", strings.Join(args, " "), out, e)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Errorf("a --help created the data directory")
	}
	// Real usage errors still exit 2.
	for _, args := range [][]string{{"queue"}, {"queue", "frobnicate", "--data-dir", dir}, {"component"}, {"user", "add", "--nosuchflag"}, {"session"}, {"cluster", "frobnicate"}} {
		if _, _, code := runCLI(t, "", args...); code != 2 {
			t.Errorf("xcollect %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
}

// TestReportRefusesTheServerItself: --to naming the server's own domain is
// a mistake (reports go to a component), caught before connecting.
func TestReportRefusesTheServerItself(t *testing.T) {
	dead := testutil.FreeAddr(t)
	for _, to := range []string{"localhost", "LocalHost"} {
		_, e, code := runCLI(t, "", "report", "--addr", dead, "--jid", "dev1@localhost", "--password", "pw",
			"--to", to, "--payload", "<x/>")
		if code != 2 || !strings.Contains(e, "is the server itself") || !strings.Contains(e, "collector.localhost") {
			t.Errorf("--to %s: exit %d, %q", to, code, e)
		}
	}
	_, e, code := runCLI(t, "", "report", "--addr", dead, "--jid", "dev1@localhost", "--password", "pw",
		"--to", "collector.localhost", "--payload", "<x/>")
	if code != 1 || !strings.Contains(e, "is xcollect running") {
		t.Errorf("a component --to: exit %d, %q", code, e)
	}
}

// TestConsoleTimestampsHaveMilliseconds: the console format shows
// 15:04:05.000; the milliseconds must be real, not always .000.
func TestConsoleTimestampsHaveMilliseconds(t *testing.T) {
	var buf bytes.Buffer
	f := config.File{Log: config.Log{Level: "info", Format: "console"}, Node: config.Node{Name: "n1"}}
	log, err := newLogger(f, &buf)
	if err != nil {
		t.Fatal(err)
	}
	ms := regexp.MustCompile(`\d\d:\d\d:\d\d\.(\d\d\d)`)
	for i := 0; i < 20; i++ {
		buf.Reset()
		log.Info().Msg("tick")
		m := ms.FindStringSubmatch(buf.String())
		if m == nil {
			t.Fatalf("no HH:MM:SS.mmm in %q", buf.String())
		}
		if m[1] != "000" {
			return
		}
		time.Sleep(7 * time.Millisecond)
	}
	t.Fatalf("20 lines 7 ms apart all end in .000: %q", buf.String())
}

// TestJSONTimestampsHaveMilliseconds: JSON lines carry the same precision.
func TestJSONTimestampsHaveMilliseconds(t *testing.T) {
	var buf bytes.Buffer
	f := config.File{Log: config.Log{Level: "info", Format: "json"}, Node: config.Node{Name: "n1"}}
	log, err := newLogger(f, &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("tick")
	if !regexp.MustCompile(`"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}`).MatchString(buf.String()) {
		t.Fatalf("no millisecond timestamp in %q", buf.String())
	}
}

const commentedConfig = `# my node: keep every byte of this
domains: [example.com]   # served
data_dir: %s

components:
  # the collector for the field apps
  - jid: collector.example.com
    secret: "s1"          # rotate yearly
    receive_presence: true
  - {jid: audit.example.com, secret: s2}

# cluster settings follow
cluster:
  queue_lease: 30s        # default
`

func writeConfig(t *testing.T, text string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "x.yaml")
	if err := os.WriteFile(cfg, []byte(strings.Replace(text, "%s", dir, 1)), 0o640); err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestComponentAddKeepsTheFile: add inserts one entry and leaves every
// other byte of a commented file alone; remove takes it out again and the
// file is back to what it was.
func TestComponentAddKeepsTheFile(t *testing.T) {
	cfg, _ := writeConfig(t, commentedConfig)
	before := readFile(t, cfg)
	out, e, code := runCLI(t, "", "component", "add", "new.example.com", "--secret", "s3", "--multi", "--config", cfg)
	if code != 0 || !strings.Contains(out, "added component new.example.com") {
		t.Fatalf("add: %d %s %s", code, out, e)
	}
	after := readFile(t, cfg)
	entry := "  - jid: new.example.com\n    secret: s3\n    multiple_connections: true\n"
	want := strings.Replace(before, "\n\n# cluster settings", "\n"+entry+"\n# cluster settings", 1)
	if after != want {
		t.Fatalf("file after add:\n%s\nwant:\n%s", after, want)
	}
	if st, _ := os.Stat(cfg); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 kept", st.Mode().Perm())
	}
	f, err := config.Load(cfg)
	if err != nil || len(f.Components) != 3 || f.Components[2].JID != "new.example.com" || !f.Components[2].Multi || f.Components[2].Secret != "s3" {
		t.Fatalf("loaded %+v %v", f.Components, err)
	}
	out, e, code = runCLI(t, "", "component", "remove", "new.example.com", "--config", cfg)
	if code != 0 || !strings.Contains(out, "removed component new.example.com") {
		t.Fatalf("remove: %d %s %s", code, out, e)
	}
	if got := readFile(t, cfg); got != before {
		t.Fatalf("file after add+remove:\n%s\nwant the original:\n%s", got, before)
	}
	// Remove the flow-style entry and the first one: only their lines go.
	if _, e, code := runCLI(t, "", "component", "remove", "audit.example.com", "--config", cfg); code != 0 {
		t.Fatalf("remove audit: %s", e)
	}
	if got, want := readFile(t, cfg), strings.Replace(before, "  - {jid: audit.example.com, secret: s2}\n", "", 1); got != want {
		t.Fatalf("after remove audit:\n%s\nwant:\n%s", got, want)
	}
	if _, e, code := runCLI(t, "", "component", "remove", "collector.example.com", "--config", cfg); code != 0 {
		t.Fatalf("remove collector: %s", e)
	}
	f, err = config.Load(cfg)
	if err != nil || len(f.Components) != 0 {
		t.Fatalf("after removing all: %+v %v\n%s", f.Components, err, readFile(t, cfg))
	}
	got := readFile(t, cfg)
	for _, keep := range []string{"# my node: keep every byte of this\n", "domains: [example.com]   # served\n", "# cluster settings follow\ncluster:\n  queue_lease: 30s        # default\n"} {
		if !strings.Contains(got, keep) {
			t.Errorf("lost %q:\n%s", keep, got)
		}
	}
	// And add into the now empty list works.
	if _, e, code := runCLI(t, "", "component", "add", "collector.example.com", "--secret", "x", "--config", cfg); code != 0 {
		t.Fatalf("add into empty list: %s\n%s", e, readFile(t, cfg))
	}
	if f, err := config.Load(cfg); err != nil || len(f.Components) != 1 {
		t.Fatalf("loaded %+v %v\n%s", f.Components, err, readFile(t, cfg))
	}
}

// TestComponentAddWithoutList: a file without components gets the list
// appended at its end, the rest untouched.
func TestComponentAddWithoutList(t *testing.T) {
	cfg, dir := writeConfig(t, "# minimal\ndomains: [example.com]\ndata_dir: %s") // no final newline
	if _, e, code := runCLI(t, "", "component", "add", "c.example.com", "--secret", "x", "--receive-presence", "--config", cfg); code != 0 {
		t.Fatalf("add: %s", e)
	}
	want := "# minimal\ndomains: [example.com]\ndata_dir: " + dir + "\ncomponents:\n  - jid: c.example.com\n    secret: x\n    receive_presence: true\n"
	if got := readFile(t, cfg); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestComponentAddRefusesForeignDomains: a component must be a subdomain
// of a served domain; remove of an unknown one says so; nothing changes.
func TestComponentAddRefusesForeignDomains(t *testing.T) {
	cfg, _ := writeConfig(t, commentedConfig)
	before := readFile(t, cfg)
	for _, j := range []string{"collector.other.org", "example.com.evil.net", "notexample.com"} {
		_, e, code := runCLI(t, "", "component", "add", j, "--config", cfg)
		if code == 0 || !strings.Contains(e, "not a subdomain of a served domain") || !strings.Contains(e, "example.com") {
			t.Errorf("add %s: %d %q", j, code, e)
		}
	}
	if _, e, code := runCLI(t, "", "component", "remove", "nope.example.com", "--config", cfg); code == 0 || !strings.Contains(e, "not configured") {
		t.Errorf("remove unknown: %d %q", code, e)
	}
	if got := readFile(t, cfg); got != before {
		t.Fatalf("file changed:\n%s", got)
	}
}

// TestProcessPrintsReportsNotPresence: the demo processor's output is the
// reports; the presence of users coming online is acked quietly unless
// --presence asks for it.
func TestProcessPrintsReportsNotPresence(t *testing.T) {
	n := startCLINode(t, "    receive_presence: true\n")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A device comes online (a chat client would too), then reports.
	send := func(value string) {
		r, err := reporter.New(reporter.Config{Addr: n.c2s, JID: "dev1@localhost", Password: "pw", InsecureSkipVerify: true, AllowPlaintext: true})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if err := r.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.SetPresence(ctx, "", "online"); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Report(ctx, "collector.localhost", []byte("<temp xmlns='urn:x'>"+value+"</temp>")); err != nil {
			t.Fatal(err)
		}
	}
	run := func(want string, args ...string) (string, string) {
		pctx, pcancel := context.WithCancel(ctx)
		pout, perr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
		done := make(chan error, 1)
		go func() {
			done <- cmdProcess(pctx, append([]string{"--addr", n.comp, "--jid", "collector.localhost", "--secret", "sec"}, args...), pout, perr)
		}()
		testutil.WaitFor(t, 30*time.Second, "the report line "+want, func() bool { return strings.Contains(pout.String(), want) })
		pcancel()
		if err := <-done; err != nil {
			t.Fatalf("process: %v", err)
		}
		return pout.String(), perr.String()
	}
	send("1")
	stdout, stderr := run(">1</temp>")
	if strings.Contains(stdout, "<presence") || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("stdout is not just the report:\n%s", stdout)
	}
	if !strings.Contains(stderr, "--presence") {
		t.Errorf("stderr does not say presence was skipped:\n%s", stderr)
	}
	send("2")
	stdout, _ = run(">2</temp>", "--presence")
	if !strings.Contains(stdout, `"stanza":"<presence`) {
		t.Fatalf("--presence did not print presence:\n%s", stdout)
	}
}

// TestHealthcheck: the container health check asks the configured HTTP
// listener and fails unless the node answers 200.
func TestHealthcheck(t *testing.T) {
	status := http.StatusOK
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte("store unreachable: test\n"))
	}))
	defer ts.Close()
	_, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	cfg, _ := writeConfig(t, "data_dir: %s\nlisteners: {http: \":"+port+"\"}\n")
	if out, e, code := runCLI(t, "", "healthcheck", "--config", cfg); code != 0 || !strings.Contains(out, "/healthz") {
		t.Fatalf("healthy: %d %q %q", code, out, e)
	}
	status = http.StatusServiceUnavailable
	if _, e, code := runCLI(t, "", "healthcheck", "--config", cfg); code != 1 || !strings.Contains(e, "503") || !strings.Contains(e, "store unreachable") {
		t.Fatalf("unhealthy: %d %q", code, e)
	}
	ts.Close()
	if _, e, code := runCLI(t, "", "healthcheck", "--config", cfg); code != 1 || !strings.Contains(e, "connection refused") {
		t.Fatalf("nobody listening: %d %q", code, e)
	}
	off, _ := writeConfig(t, "data_dir: %s\nlisteners: {http: \"\"}\n")
	if _, e, code := runCLI(t, "", "healthcheck", "--config", off); code != 1 || !strings.Contains(e, "disabled") {
		t.Fatalf("http disabled: %d %q", code, e)
	}
}
