package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/testutil"

	"xcollect.dev/xcollect/internal/testnode"
)

// TestReportsSmoke builds the xcollect binary (clients/ must not import
// the server), runs a node on the embedded store and runs the reports
// scenario against it for about 2 s.
func TestReportsSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the xcollect binary")
	}
	dir := t.TempDir()
	bin, err := testnode.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	c2s, comp := testutil.FreeAddr(t), testutil.FreeAddr(t)
	cfg := filepath.Join(dir, "xcollect.yaml")
	conf := fmt.Sprintf(`domains: [localhost]
data_dir: %s
log: {level: warn}
listeners: {c2s: %q, c2s_tls: "", component: %q, http: ""}
tls: {require: false}
components:
  - jid: collector.localhost
    secret: s3cret
    receive_presence: false
`, filepath.Join(dir, "data"), c2s, comp)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	const clients = 4
	for i := range clients {
		out, err := exec.Command(bin, "user", "add", fmt.Sprintf("user%d@localhost", i), "--password", "pass", "--config", cfg).CombinedOutput()
		if err != nil {
			t.Fatalf("user add: %v\n%s", err, out)
		}
	}
	var logs bytes.Buffer
	srv := exec.Command(bin, "serve", "--config", cfg)
	srv.Stdout, srv.Stderr = &logs, &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = srv.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = srv.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = srv.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("xcollect log:\n%s", logs.String())
		}
	})
	// Wait for both listeners (bounded).
	for _, a := range []string{c2s, comp} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("xcollect did not listen on %s: %v", a, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	var out, errb bytes.Buffer
	err = run([]string{"-scenario", "reports", "-label", "smoke", "-c2s", c2s, "-component-addr", comp,
		"-domain", "localhost", "-component", "collector.localhost", "-secret", "s3cret",
		"-n", fmt.Sprint(clients), "-w", "5", "-d", "2s", "-drain", "5s",
		"-server-pid", fmt.Sprint(srv.Process.Pid)}, &out, &errb)
	if err != nil {
		t.Fatalf("loadgen: %v\n%s", err, errb.String())
	}
	var res struct {
		Sent, Received, Lost, Bounced int64
		ReportsPerS                   float64 `json:"reports_per_s"`
		P99                           float64 `json:"p99_ms"`
		ComponentSM                   bool    `json:"component_sm"`
		ClientSM                      bool    `json:"client_sm"`
		ClientAcked                   int64   `json:"client_acked"`
		ServerCPU                     float64 `json:"server_cpu_us_per_report"`
		LoadgenCPU                    float64 `json:"loadgen_cpu_us_per_report"`
		WriteBurst                    bool    `json:"write_burst"`
	}
	line := strings.TrimSpace(out.String())
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("output is not one JSON line: %v\n%s", err, line)
	}
	t.Logf("%s", line)
	if res.Sent == 0 || res.Received != res.Sent || res.Lost != 0 || res.Bounced != 0 {
		t.Errorf("sent %d, received %d, lost %d, bounced %d: want all received", res.Sent, res.Received, res.Lost, res.Bounced)
	}
	if res.ReportsPerS <= 0 || res.P99 <= 0 {
		t.Errorf("reports/s %v, p99 %v ms: want positive figures", res.ReportsPerS, res.P99)
	}
	if !res.ComponentSM || !res.ClientSM {
		t.Errorf("stream management: component %v, client %v; xcollect offers it on both", res.ComponentSM, res.ClientSM)
	}
	if res.ClientAcked != res.Sent {
		t.Errorf("client acked %d of %d reports", res.ClientAcked, res.Sent)
	}
	if res.ServerCPU <= 0 || res.LoadgenCPU <= 0 || !res.WriteBurst {
		t.Errorf("server CPU %v µs/report, loadgen CPU %v µs/report, write burst %v: want positive CPU figures (the server ran -server-pid) and bursts by default",
			res.ServerCPU, res.LoadgenCPU, res.WriteBurst)
	}
}

// Report ids of two runs never collide, and a run takes only its own ids.
func TestRunIDsAreUniquePerRun(t *testing.T) {
	o := options{n: 2, size: 200, compJID: "collector.localhost"}
	a, b := newRun(o), newRun(o)
	if a.runID == b.runID {
		t.Fatalf("two runs share the id %q", a.runID)
	}
	id := func(r *reportRun, ci, seq int) string {
		raw := string(r.report(ci, seq))
		_, rest, _ := strings.Cut(raw, "id='")
		v, _, _ := strings.Cut(rest, "'")
		return v
	}
	ci, seq, _, ours := a.parseID(id(a, 1, 7))
	if !ours || ci != 1 || seq != 7 {
		t.Fatalf("own id parsed as client %d seq %d ours %v, want 1, 7, true", ci, seq, ours)
	}
	if _, _, _, ours := a.parseID(id(b, 1, 7)); ours {
		t.Fatalf("run %s took run %s's id as its own", a.runID, b.runID)
	}
	if n := len(a.report(0, 0)); n < o.size-10 || n > o.size+40 {
		t.Errorf("report of %d bytes for -size %d", n, o.size)
	}
}

// processCPU reads a process's CPU time from /proc: it grows while the
// process computes; an unknown pid is an error.
func TestProcessCPU(t *testing.T) {
	self := fmt.Sprint(os.Getpid())
	before, err := processCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
		x++
	}
	after, err := processCPU(self + ",") // a trailing comma is allowed
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("CPU %v after 200 ms of work, %v before (x=%d)", after, before, x)
	}
	if _, err := processCPU("999999999"); err == nil {
		t.Error("no error for a pid that does not exist")
	}
}

func TestC2SAddrSpread(t *testing.T) {
	one := options{c2sAddr: "127.0.0.1:5222", c2sAddrs: []string{"127.0.0.1:5222"}, users: 10}
	for i := range 4 {
		if got := c2sOpts(one, i).addr; got != "127.0.0.1:5222" {
			t.Errorf("one address, client %d: %s", i, got)
		}
	}
	three := options{c2sAddrs: []string{"a:1", "b:1", "c:1"}, users: 10}
	want := []string{"a:1", "b:1", "c:1", "a:1", "b:1"}
	for i, w := range want {
		if got := c2sOpts(three, i).addr; got != w {
			t.Errorf("three addresses, client %d: %s, want %s", i, got, w)
		}
	}
	var errb bytes.Buffer
	if err := run([]string{"-c2s", " , ", "-scenario", "nope"}, io.Discard, &errb); err == nil || !strings.Contains(err.Error(), "no address") {
		t.Errorf("empty -c2s list: %v", err)
	}
}
