package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleConfigMatchesStruct loads the documented example: every key in
// it must exist (unknown keys are errors) and it must validate.
func TestExampleConfigMatchesStruct(t *testing.T) {
	f, err := Load("../../deployments/xcollect.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(f.Components) != 1 || f.Components[0].JID != "collector.example.com" || f.Components[0].MaxAge.Hours() != 168 {
		t.Fatalf("components = %+v", f.Components)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"domains: [a]\nbogus: 1\n", "line 2: field bogus not found"},
		{"components:\n  - jid: c.localhost\n", "components[0].secret: empty"},
		{"listeners: {c2s: 41522}\n", `listeners.c2s: "41522" is not host:port (for every interface write ":41522"`},
		{"listeners: {http: \"127.0.0.1:99999\"}\n", "listeners.http: \"127.0.0.1:99999\": the port must be a number"},
		{"domains: [example.com]\ncomponents:\n  - {jid: proc.internal, secret: s, receive_presence: true}\n", "not a subdomain of a served domain"},
		{"cluster:\n  join: [a:1]\n", "set storage.postgres.dsn"},
		{"cluster:\n  join: [a:1]\n  bind: 10.0.0.1:7946\n", "head -c 32 /dev/urandom | base64"},
		{"cluster:\n  join_dns: seeds.example\n  bind: 10.0.0.1:7946\n", "cluster.key: empty"},
		{"cluster:\n  join: [a:1]\n  key: '%%%'\n", "cluster.key: not base64"},
		{"cluster:\n  join: [a:1]\n  key: MDEyMzQ1Njc4OWFiY2RlZg==\n", "cluster.bind: not set"},
		{"tls:\n  cert: x.pem\n", "set both tls.cert and tls.key"},
		{"limits:\n  max_stanza_bytes: 10\n", "must be at least 4096"},
		{"limits:\n  idle_timeout: soon\n", "line 2"},
		{"cluster:\n  steering: {min_sessions: -1}\n", "cluster.steering.min_sessions: -1"},
	} {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := Load(p)
		if err == nil {
			err = f.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	f, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if f.Domains[0] != "localhost" || *f.Listeners.C2S != ":5222" || !*f.TLS.Require || f.Storage.Embedded.Path != "./data/xcollect.db" {
		t.Fatalf("defaults = %+v", f)
	}
}
