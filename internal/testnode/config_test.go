package testnode

import (
	"path/filepath"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/config"
)

// The file Config writes is read by the node's own loader as intended:
// every field lands in the key it names.
func TestConfigLoadsAsWritten(t *testing.T) {
	dir := t.TempDir()
	c := Config{
		Name: "n1", Domain: "example.com", DataDir: filepath.Join(dir, "data"), LogLevel: "debug",
		C2S: "127.0.0.1:15222", ComponentAddr: "127.0.0.1:15347", HTTP: "127.0.0.1:15280",
		ComponentJID: "collector.example.com", ComponentSecret: "s3cret", ComponentExtra: "    receive_presence: true\n",
		PostgresDSN: "postgres://u@127.0.0.1:1/db", PostgresStartupTimeout: "7s", ResumeTimeout: "90s",
	}
	path := filepath.Join(dir, "x.yaml")
	c.Write(t, path)
	f, err := config.Load(path)
	if err != nil {
		t.Fatalf("load:\n%s\n%v", c.YAML(), err)
	}
	str := func(p *string) string {
		if p == nil {
			return "<unset>"
		}
		return *p
	}
	checks := []struct{ name, got, want string }{
		{"node.name", f.Node.Name, "n1"},
		{"data_dir", f.DataDir, c.DataDir},
		{"log.level", f.Log.Level, "debug"},
		{"log.format", f.Log.Format, "json"},
		{"listeners.c2s", str(f.Listeners.C2S), c.C2S},
		{"listeners.c2s_tls", str(f.Listeners.C2STLS), ""},
		{"listeners.component", str(f.Listeners.Component), c.ComponentAddr},
		{"listeners.http", str(f.Listeners.HTTP), c.HTTP},
		{"storage.postgres.dsn", f.Storage.Postgres.DSN, c.PostgresDSN},
		{"storage.postgres.startup_timeout", f.Storage.Postgres.StartupTimeout.String(), (7 * time.Second).String()},
		{"stream_management.resume_timeout", f.SM.ResumeTimeout.String(), (90 * time.Second).String()},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.name, ch.got, ch.want)
		}
	}
	if len(f.Domains) != 1 || f.Domains[0] != "example.com" {
		t.Errorf("domains = %v", f.Domains)
	}
	if f.TLS.Require == nil || *f.TLS.Require {
		t.Errorf("tls.require = %v, want false", f.TLS.Require)
	}
	if len(f.Components) != 1 || f.Components[0].JID != c.ComponentJID || f.Components[0].Secret != c.ComponentSecret || !f.Components[0].ReceivePresence {
		t.Errorf("components = %+v", f.Components)
	}
}

// Without the optional parts the file has no storage or
// stream_management section and the HTTP listener is off.
func TestConfigMinimal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.yaml")
	Config{Name: "n", Domain: "localhost", DataDir: t.TempDir(), C2S: "127.0.0.1:15222", ComponentJID: "c.localhost", ComponentSecret: "s"}.Write(t, path)
	f, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Storage.Postgres.DSN != "" || f.Log.Level != "info" || f.Listeners.HTTP == nil || *f.Listeners.HTTP != "" {
		t.Errorf("dsn %q, log level %q, http %v", f.Storage.Postgres.DSN, f.Log.Level, f.Listeners.HTTP)
	}
}
