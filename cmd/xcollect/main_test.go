package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"xcollect.dev/xcollect/cluster"
	"xcollect.dev/xcollect/internal/config"
)

func runCLI(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	if stdin != "" {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		old := os.Stdin
		os.Stdin = r
		t.Cleanup(func() { os.Stdin = old })
		_, _ = w.WriteString(stdin)
		w.Close()
	}
	code := run(args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestUserCommands(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "x.yaml")
	if err := os.WriteFile(cfg, []byte("# my node\ndomains: [example.com, other.org]\ndata_dir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, e, code := runCLI(t, "", "user", "add", "alice@example.com", "--password", "pw", "--config", cfg); code != 0 {
		t.Fatalf("add: %d %s", code, e)
	}
	if _, e, code := runCLI(t, "secret\n", "user", "add", "bob@other.org", "--config", cfg); code != 0 {
		t.Fatalf("add from stdin: %d %s", code, e)
	}
	out, _, _ := runCLI(t, "", "user", "list", "--config", cfg)
	if out != "alice@example.com\nbob@other.org\n" {
		t.Fatalf("list = %q", out)
	}
	if _, e, code := runCLI(t, "", "user", "add", "alice@example.com", "--password", "x", "--config", cfg); code == 0 || !strings.Contains(e, "already exists") || !strings.Contains(e, "user passwd") {
		t.Fatalf("duplicate add: %d %s", code, e)
	}
	if _, e, code := runCLI(t, "", "user", "add", "carol@nowhere.net", "--password", "x", "--config", cfg); code == 0 || !strings.Contains(e, "not served") {
		t.Fatalf("unserved domain: %d %s", code, e)
	}
	if _, e, code := runCLI(t, "", "user", "passwd", "alice@example.com", "--password", "new", "--config", cfg); code != 0 {
		t.Fatalf("passwd: %s", e)
	}
	if _, e, code := runCLI(t, "", "user", "delete", "bob@other.org", "--config", cfg); code != 0 {
		t.Fatalf("delete: %s", e)
	}
	if _, e, code := runCLI(t, "", "user", "delete", "bob@other.org", "--config", cfg); code == 0 || !strings.Contains(e, "does not exist") {
		t.Fatalf("delete twice: %d %s", code, e)
	}
	out, _, _ = runCLI(t, "", "queue", "stats", "--config", cfg)
	if !strings.HasPrefix(out, "COMPONENT") {
		t.Fatalf("queue stats = %q", out)
	}
	if _, e, code := runCLI(t, "", "queue", "list", "--config", cfg); code == 0 || !strings.Contains(e, "COMPONENT") {
		t.Fatalf("queue list without component: %d %s", code, e)
	}
	if _, e, code := runCLI(t, "", "migrate", "--config", cfg); code == 0 || !strings.Contains(e, "no Postgres configured") {
		t.Fatalf("migrate on embedded: %d %s", code, e)
	}
}

func TestComponentAdd(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "x.yaml")
	if err := os.WriteFile(cfg, []byte("# keep this comment\ndomains: [example.com]\ndata_dir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, e, code := runCLI(t, "", "component", "add", "collector.example.com", "--multi", "--config", cfg)
	if code != 0 || !strings.Contains(out, "secret: ") {
		t.Fatalf("add: %d %s %s", code, out, e)
	}
	if _, e, code := runCLI(t, "", "component", "add", "collector.example.com", "--config", cfg); code == 0 || !strings.Contains(e, "already configured") {
		t.Fatalf("add twice: %d %s", code, e)
	}
	if _, e, code := runCLI(t, "", "component", "add", "example.com", "--config", cfg); code == 0 || !strings.Contains(e, "also a served domain") {
		t.Fatalf("add a served domain: %d %s", code, e)
	}
	data, _ := os.ReadFile(cfg)
	if !strings.Contains(string(data), "# keep this comment") {
		t.Fatalf("comments lost:\n%s", data)
	}
	out, _, _ = runCLI(t, "", "component", "list", "--config", cfg)
	if !strings.Contains(out, "collector.example.com\tmulti=true") {
		t.Fatalf("list = %q", out)
	}
	if out, e, code := runCLI(t, "", "serve", "--check-config", "--config", cfg); code != 0 || !strings.Contains(out, "configuration ok") {
		t.Fatalf("check-config: %d %s %s", code, out, e)
	}
}

func TestConfigErrorsReachTheUser(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "x.yaml")
	if err := os.WriteFile(cfg, []byte("domains: [a.example]\nlisteners:\n  c2ss: ':1'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, e, code := runCLI(t, "", "serve", "--check-config", "--config", cfg)
	if code == 0 || !strings.Contains(e, "line 3") || !strings.Contains(e, "c2ss") {
		t.Fatalf("unknown key: %d %s", code, e)
	}
	if _, e, code := runCLI(t, "", "frobnicate"); code != 2 || !strings.Contains(e, "unknown command") {
		t.Fatalf("unknown command: %d %s", code, e)
	}
}

// TestSteeringDefaultsAgree: the config file's default steering floor is
// the cluster package's (internal/config imports no xcollect package, so
// the number is written twice).
func TestSteeringDefaultsAgree(t *testing.T) {
	f, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	if f.Cluster.Steering.MinSessions != cluster.DefaultSteerMinSessions {
		t.Fatalf("cluster.steering.min_sessions defaults to %d, cluster.DefaultSteerMinSessions is %d", f.Cluster.Steering.MinSessions, cluster.DefaultSteerMinSessions)
	}
}
