package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/config"
	"xcollect.dev/xcollect/internal/testutil"
)

// A listener set to "" is not opened by serve, and --check-config names
// the same listeners serve opens.
func TestEmptyListenerIsOffInServeAndCheckConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "x.yaml")
	yaml := "domains: [example.com]\ndata_dir: " + dir + "\nlog: {format: json}\ntls: {require: false}\n" +
		"listeners: {c2s: '127.0.0.1:0', c2s_tls: '', component: '', component_tls: '', http: ''}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	out, e, code := runCLI(t, "", "serve", "--check-config", "--config", cfg)
	want := "c2s=127.0.0.1:0 c2s_tls=off component=off component_tls=off http=off"
	if code != 0 || !strings.Contains(out, "listeners: "+want) {
		t.Fatalf("check-config: %d %q %s; want listeners: %s", code, out, e, want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs testutil.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- cmdServe(ctx, []string{"--config", cfg}, &logs, &logs) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "xcollect node started") && time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v\n%s", err, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	got := logs.String()
	if !strings.Contains(got, `"listeners":"`+want+`"`) {
		t.Fatalf("serve started with other listeners than check-config said:\n%s", got)
	}
	for _, l := range []string{`"listener":"component"`, `"listener":"component_tls"`, `"listener":"http"`, `"listener":"c2s_tls"`} {
		if strings.Contains(got, l) {
			t.Fatalf("serve opened %s although it is \"\":\n%s", l, got)
		}
	}
}

// The HTTP listener binds loopback unless configured otherwise.
func TestHTTPDefaultsToLoopback(t *testing.T) {
	f, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	if *f.Listeners.HTTP != "127.0.0.1:5280" {
		t.Fatalf("default listeners.http = %q; want 127.0.0.1:5280", *f.Listeners.HTTP)
	}
	if *f.Listeners.ComponentTLS != "" {
		t.Fatalf("default listeners.component_tls = %q; want off", *f.Listeners.ComponentTLS)
	}
}

// --check-config validates the cluster part as serve builds it.
func TestCheckConfigValidatesCluster(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "x.yaml")
	yaml := "domains: [example.com]\ndata_dir: " + dir + "\nstorage: {postgres: {dsn: 'postgres://x@127.0.0.1:1/x'}}\n" +
		"cluster: {bind: '127.0.0.1:7946', key: 'AAAA'}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, e, code := runCLI(t, "", "serve", "--check-config", "--config", cfg); code == 0 || !strings.Contains(e, "secret key is 3 bytes") {
		t.Fatalf("check-config with a 3-byte cluster key: %d %q %q; want the error serve gives", code, out, e)
	}
}

// TestCheckConfigWritesNothing: --check-config validates and leaves the
// data directory as it was (it used to generate the self-signed
// certificate there).
func TestCheckConfigWritesNothing(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "x.yaml")
	if err := os.WriteFile(cfg, []byte("domains: [example.com]\ndata_dir: "+data+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runCLI(t, "", "serve", "--check-config", "--config", cfg)
	if code != 0 || !strings.Contains(out, "configuration ok") {
		t.Fatalf("check-config: exit %d, %q %q", code, out, stderr)
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("check-config created %s (%v)", data, err)
	}
}
