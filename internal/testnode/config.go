package testnode

import (
	"cmp"
	"fmt"
	"os"
	"strings"
	"testing"
)

// Config is the configuration file of a test node run as `xcollect serve`
// (a process, or cmdServe in-process): one domain, plain c2s and component
// listeners on given addresses, no HTTP unless asked, TLS not required,
// one component, and optionally Postgres and a resume timeout. It writes
// the same YAML a user would, so the tests read the file the binary reads.
type Config struct {
	// Name is node.name.
	Name string
	// Domain is the one served domain.
	Domain string
	// DataDir is data_dir (the embedded store lives there).
	DataDir string
	// LogLevel is log.level; "" is info. The format is always json.
	LogLevel string
	// C2S, ComponentAddr and HTTP are the listeners (host:port); "" turns
	// a listener off (c2s must be on).
	C2S, ComponentAddr, HTTP string
	// ComponentJID and ComponentSecret name the one component.
	ComponentJID, ComponentSecret string
	// ComponentExtra is appended as it is to the component's entry (YAML
	// lines indented by four spaces).
	ComponentExtra string
	// PostgresDSN selects the Postgres store; "" is the embedded store.
	PostgresDSN string
	// PostgresStartupTimeout is storage.postgres.startup_timeout ("" =
	// default).
	PostgresStartupTimeout string
	// ResumeTimeout is stream_management.resume_timeout ("" = default).
	ResumeTimeout string
	// Extra is appended as it is at the top level (YAML), e.g. a cluster
	// section.
	Extra string
}

// YAML returns the configuration file's text.
func (c Config) YAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "node:\n  name: %s\ndomains: [%s]\ndata_dir: %q\n", c.Name, c.Domain, c.DataDir)
	fmt.Fprintf(&b, "log:\n  level: %s\n  format: json\n", cmp.Or(c.LogLevel, "info"))
	fmt.Fprintf(&b, "listeners:\n  c2s: %q\n  c2s_tls: \"\"\n  component: %q\n  http: %q\n", c.C2S, c.ComponentAddr, c.HTTP)
	b.WriteString("tls:\n  require: false\n")
	if c.ResumeTimeout != "" {
		fmt.Fprintf(&b, "stream_management:\n  resume_timeout: %s\n", c.ResumeTimeout)
	}
	if c.PostgresDSN != "" {
		fmt.Fprintf(&b, "storage:\n  postgres:\n    dsn: %q\n", c.PostgresDSN)
		if c.PostgresStartupTimeout != "" {
			fmt.Fprintf(&b, "    startup_timeout: %s\n", c.PostgresStartupTimeout)
		}
	}
	fmt.Fprintf(&b, "components:\n  - jid: %s\n    secret: %s\n%s", c.ComponentJID, c.ComponentSecret, c.ComponentExtra)
	if c.Extra != "" {
		b.WriteString(strings.TrimSuffix(c.Extra, "\n") + "\n")
	}
	return b.String()
}

// Write writes the file to path (mode 0600); it fails the test on error.
func (c Config) Write(t testing.TB, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(c.YAML()), 0o600); err != nil {
		t.Fatalf("write test node config: %v", err)
	}
}
