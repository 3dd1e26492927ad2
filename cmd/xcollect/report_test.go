package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/testnode"
	"xcollect.dev/xcollect/internal/testutil"
)

// cliNode is an in-process xcollect serve for the report/process tests.
type cliNode struct {
	c2s, comp string
}

// startCLINode starts a node with component collector.localhost (secret
// sec); extra is appended to that component's YAML entry.
func startCLINode(t *testing.T, extra ...string) cliNode {
	t.Helper()
	dir := t.TempDir()
	n := cliNode{c2s: testutil.FreeAddr(t), comp: testutil.FreeAddr(t)}
	cfg := filepath.Join(dir, "x.yaml")
	testnode.Config{
		Name: "cli", Domain: "localhost", DataDir: dir, C2S: n.c2s, ComponentAddr: n.comp,
		ComponentJID: "collector.localhost", ComponentSecret: "sec", ComponentExtra: strings.Join(extra, ""),
	}.Write(t, cfg)
	if _, e, code := runCLI(t, "", "user", "add", "dev1@localhost", "--password", "pw", "--config", cfg); code != 0 {
		t.Fatalf("user add: %s", e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testutil.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- cmdServe(ctx, []string{"--config", cfg}, logs, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	testutil.WaitFor(t, 30*time.Second, "node start", func() bool { return strings.Contains(logs.String(), "xcollect node started") })
	return n
}

func TestReportThenProcess(t *testing.T) {
	n := startCLINode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err := cmdReport(ctx, []string{"--addr", n.c2s, "--jid", "dev1@localhost", "--password", "pw",
		"--to", "collector.localhost", "--payload", "<temp xmlns='urn:x'>21.5</temp>", "--insecure"}, &out, &errb)
	if err != nil {
		t.Fatalf("report: %v\n%s", err, errb.String())
	}
	id := strings.TrimSpace(out.String())
	if id == "" {
		t.Fatal("no id printed")
	}

	pctx, pcancel := context.WithCancel(ctx)
	pout, perr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- cmdProcess(pctx, []string{"--addr", n.comp, "--jid", "collector.localhost", "--secret", "sec"}, pout, perr)
	}()
	testutil.WaitFor(t, 30*time.Second, "the JSON line", func() bool { return strings.Contains(pout.String(), "\n") })
	pcancel()
	if err := <-done; err != nil {
		t.Fatalf("process: %v", err)
	}
	if !strings.Contains(pout.String(), `"stanza":"<message `) {
		t.Errorf("the stanza is HTML-escaped in %s", pout.String())
	}
	var line reportLine
	if err := json.Unmarshal([]byte(strings.SplitN(pout.String(), "\n", 2)[0]), &line); err != nil {
		t.Fatalf("line %q: %v", pout.String(), err)
	}
	if line.ID != id || !strings.HasPrefix(line.From, "dev1@localhost/") || !strings.Contains(line.Stanza, "<temp xmlns='urn:x'>21.5</temp>") {
		t.Fatalf("line %+v, want id %s", line, id)
	}
}

func TestProcessExecAcksOnlyOnSuccess(t *testing.T) {
	n := startCLINode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	payload := filepath.Join(dir, "p.xml")
	if err := os.WriteFile(payload, []byte("<m xmlns='urn:x'/>\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := cmdReport(ctx, []string{"--addr", n.c2s, "--jid", "dev1@localhost", "--password", "pw",
		"--to", "collector.localhost", "--payload", "@" + payload, "--insecure"}, &out, &errb); err != nil {
		t.Fatalf("report: %v", err)
	}
	id := strings.TrimSpace(out.String())
	// The command fails the first time (and leaves a marker), succeeds the
	// second: the report must be delivered twice, then acked.
	got, marker := filepath.Join(dir, "got"), filepath.Join(dir, "ok")
	script := fmt.Sprintf(`echo "$XCOLLECT_ID" >> %q; cat >> %q; if [ -f %q ]; then exit 0; fi; touch %q; exit 3`, got+".ids", got, marker, marker)
	pctx, pcancel := context.WithCancel(ctx)
	pout, perr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- cmdProcess(pctx, []string{"--addr", n.comp, "--jid", "collector.localhost", "--secret", "sec", "--exec", script}, pout, perr)
	}()
	testutil.WaitFor(t, 30*time.Second, "two runs of --exec", func() bool {
		b, _ := os.ReadFile(got + ".ids") // absent until the first run
		return strings.Count(string(b), "\n") >= 2
	})
	pcancel()
	if err := <-done; err != nil {
		t.Fatalf("process: %v", err)
	}
	ids, _ := os.ReadFile(got + ".ids") // written above
	if string(ids) != id+"\n"+id+"\n" {
		t.Fatalf("--exec saw ids %q, want %s twice", ids, id)
	}
	if !strings.Contains(perr.String(), "exit status 3") {
		t.Errorf("the failure was not logged: %s", perr.String())
	}
}

func TestReportErrorsSayWhatToFix(t *testing.T) {
	n := startCLINode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := []string{"--jid", "dev1@localhost", "--to", "collector.localhost", "--payload", "<x/>", "--insecure"}
	var out, errb bytes.Buffer
	err := cmdReport(ctx, append([]string{"--addr", n.c2s, "--password", "wrong"}, base...), &out, &errb)
	if err == nil || err.Error() != "not-authorized: check --jid and --password" {
		t.Errorf("wrong password: %v", err)
	}
	dead := testutil.FreeAddr(t)
	err = cmdReport(ctx, append([]string{"--addr", dead, "--password", "pw"}, base...), &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "is xcollect running on "+dead+"?") {
		t.Errorf("nobody listening: %v", err)
	}
	if _, e, code := runCLI(t, "", append([]string{"report", "--addr", dead, "--password", "pw"}, base...)...); code != 1 || !strings.Contains(e, "is xcollect running on") {
		t.Errorf("xcollect report via run: exit %d, %q", code, e)
	}
	err = cmdProcess(ctx, []string{"--addr", n.comp, "--jid", "collector.localhost", "--secret", "bad"}, &out, &errb)
	if err == nil || err.Error() != "not-authorized: check --jid and --secret" {
		t.Errorf("wrong secret: %v", err)
	}
	err = cmdProcess(ctx, []string{"--addr", n.comp, "--jid", "other.localhost", "--secret", "sec"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "host-unknown") {
		t.Errorf("unknown component: %v", err)
	}
	errb.Reset()
	if err := cmdReport(ctx, []string{"--addr", n.c2s}, &out, &errb); err != errUsage || !strings.Contains(errb.String(), "missing: --jid, --password, --payload, --to") {
		t.Errorf("missing flags: %v %q", err, errb.String())
	}
}
