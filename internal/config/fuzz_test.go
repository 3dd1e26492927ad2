package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzLoad loads arbitrary config files: Load and Validate never panic,
// and defaults are a fixed point (applying them again changes nothing).
func FuzzLoad(f *testing.F) {
	example, err := os.ReadFile("../../deployments/xcollect.example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte("domains: [a]\nbogus: 1\n"))
	f.Add([]byte("components:\n  - jid: c.localhost\n    secret: s\n    max_age: 168h\n"))
	f.Add([]byte("cluster:\n  join: [a:1]\n  key: k\nstorage:\n  postgres:\n    dsn: postgres://x\n"))
	f.Add([]byte("limits:\n  idle_timeout: soon\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("listeners:\n  component: \"\"\n  c2s: ':0'\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(p)
		if err != nil {
			return
		}
		_ = cfg.Validate()
		if again := cfg.WithDefaults(); !reflect.DeepEqual(again, cfg) {
			t.Fatalf("defaults are not a fixed point:\n%+v\n%+v", cfg, again)
		}
	})
}
