package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/config"
)

// TestClusterBindsConfiguredAddress: a node given cluster.bind listens for
// gossip and links on that address only, never on all interfaces.
func TestClusterBindsConfiguredAddress(t *testing.T) {
	for _, tc := range []struct {
		name, bind, advertise, link    string
		wantGossip, wantLink, wantMeta string // wantMeta: the link address others dial
	}{
		{"bind only", "127.0.0.2:7946", "", "", "127.0.0.2", "127.0.0.2:7947", "127.0.0.2:7947"},
		{"link port only", "127.0.0.2:7946", "", ":9000", "127.0.0.2", "127.0.0.2:9000", "127.0.0.2:9000"},
		{"advertise only", "", "10.1.2.3:7946", "", "10.1.2.3", "10.1.2.3:7947", "10.1.2.3:7947"},
		{"explicit link", "127.0.0.2:7946", "", "127.0.0.3:7000", "127.0.0.2", "127.0.0.3:7000", "127.0.0.3:7000"},
		{"all interfaces asked for", "0.0.0.0:7946", "", "0.0.0.0:7947", "0.0.0.0", "0.0.0.0:7947", "0.0.0.0:7947"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := config.File{Cluster: config.Cluster{Bind: tc.bind, Advertise: tc.advertise, Link: tc.link,
				Join: []string{"127.0.0.1:7946"}, Key: "q1w5XnH1ePzP0h0gqs2m6mJ0nNl3c8rVbQ7uXp9yZ+s="}}
			f.Node.Name = "node1"
			f = f.WithDefaults()
			c, err := clusterConfig(f, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if c.BindAddr != tc.wantGossip {
				t.Errorf("gossip binds %q, want %q", c.BindAddr, tc.wantGossip)
			}
			if c.LinkAddr != tc.wantLink {
				t.Errorf("link binds %q, want %q", c.LinkAddr, tc.wantLink)
			}
			if c.Meta.Link != tc.wantMeta {
				t.Errorf("advertised link %q, want %q", c.Meta.Link, tc.wantMeta)
			}
			if h, _, _ := net.SplitHostPort(c.LinkAddr); h == "" {
				t.Errorf("link listens on all interfaces (%q) without being asked", c.LinkAddr)
			}
		})
	}
}

// TestClusterKeyRequired: serve --check-config refuses a cluster without a
// key or with a key that is text, saying how to make one; the test-only
// insecure switch and a random key pass.
func TestClusterKeyRequired(t *testing.T) {
	const base = "storage: {postgres: {dsn: 'postgres://x@127.0.0.1/x'}}\ncluster:\n  bind: 127.0.0.1:7946\n  join: [127.0.0.2:7946]\n"
	for _, tc := range []struct {
		name, extra, want string // want "": accepted
	}{
		{"no key", "", "head -c 32 /dev/urandom | base64"},
		{"empty key", "  key: ''\n", "cluster.key: empty"},
		{"text key", "  key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n", "printable text"},
		{"short key", "  key: q1w5XnH1ePzP0h0=\n", "use 16, 24 or 32 random bytes"},
		{"insecure", "  insecure: true\n", ""},
		{"random key", "  key: q1w5XnH1ePzP0h0gqs2m6mJ0nNl3c8rVbQ7uXp9yZ+s=\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "x.yaml")
			if err := os.WriteFile(cfg, []byte("data_dir: "+dir+"\n"+base+tc.extra), 0o600); err != nil {
				t.Fatal(err)
			}
			out, e, code := runCLI(t, "", "serve", "--check-config", "--config", cfg)
			if tc.want == "" {
				if code != 0 || !strings.Contains(out, "configuration ok") {
					t.Fatalf("check-config: %d %s %s", code, out, e)
				}
				return
			}
			if code == 0 || !strings.Contains(e, tc.want) {
				t.Fatalf("check-config: exit %d, stderr %q; want an error containing %q", code, e, tc.want)
			}
			t.Logf("%s: %s", tc.name, strings.TrimSpace(e))
		})
	}
}
