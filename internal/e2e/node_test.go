package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/testnode"
	"xcollect.dev/xcollect/internal/testutil"
)

// Names shared by the tests.
const (
	domain    = "example.com"
	compJID   = "collector.example.com"
	compPass  = "e2e-secret"
	userPass  = "e2e-password"
	startWait = 30 * time.Second // node start on a loaded 2-core box
)

// nodeOptions configure newNode.
type nodeOptions struct {
	// DSN selects the Postgres store; "" is the embedded store in the
	// node's data directory.
	DSN string
	// StartupTimeout is storage.postgres.startup_timeout ("" = default).
	StartupTimeout string
}

// node is one xcollect process: its config, data directory and ports stay
// the same across kill and start. Its stderr (JSON lines) is appended to
// logPath over all starts.
type node struct {
	t       *testing.T
	dir     string
	cfgPath string
	logPath string
	c2s     string // host:port
	comp    string // host:port

	mu     sync.Mutex
	proc   *proc // nil while stopped
	starts int
}

// proc is one running xcollect serve.
type proc struct {
	pid  int
	done chan struct{} // closed when it exited
	err  error         // exit status, valid after done
}

// newNode writes the config of a node with one component (compJID) and
// registers a cleanup that kills the process. It does not start it.
func newNode(t *testing.T, opts nodeOptions) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{t: t, dir: dir, cfgPath: filepath.Join(dir, "xcollect.yaml"), logPath: filepath.Join(dir, "node.log"),
		c2s: testutil.FreeAddr(t), comp: testutil.FreeAddr(t)}
	testnode.Config{
		Name: "e2e", Domain: domain, DataDir: filepath.Join(dir, "data"),
		C2S: n.c2s, ComponentAddr: n.comp, ComponentJID: compJID, ComponentSecret: compPass,
		PostgresDSN: opts.DSN, PostgresStartupTimeout: opts.StartupTimeout,
	}.Write(t, n.cfgPath)
	t.Cleanup(n.kill)
	return n
}

// run runs one xcollect command against the node's config and returns
// its combined output and error (an *exec.ExitError on a non-zero exit).
func (n *node) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, append(args, "--config", n.cfgPath)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// addUsers creates user1…userN with userPass (xcollect user add).
func (n *node) addUsers(count int) {
	n.t.Helper()
	for i := 1; i <= count; i++ {
		out, err := n.run(30*time.Second, "user", "add", fmt.Sprintf("user%d@%s", i, domain), "--password", userPass)
		if err != nil {
			n.t.Fatalf("xcollect user add user%d: %v\n%s", i, err, out)
		}
	}
}

// start starts xcollect serve and waits until it logged "xcollect node
// started" once more than before.
func (n *node) start() {
	n.t.Helper()
	n.mu.Lock()
	if n.proc != nil {
		n.mu.Unlock()
		n.t.Fatal("node already running")
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		n.mu.Unlock()
		n.t.Fatal(err)
	}
	p, err := spawn(binPath, []string{"serve", "--config", n.cfgPath}, logf)
	if cerr := logf.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		n.mu.Unlock()
		n.t.Fatalf("start xcollect: %v", err)
	}
	n.proc = p
	n.starts++
	want := n.starts
	n.mu.Unlock()
	deadline := time.Now().Add(startWait)
	for time.Now().Before(deadline) {
		if n.countLog("xcollect node started") >= want {
			return
		}
		select {
		case <-p.done:
			n.t.Fatalf("xcollect serve exited at start: %v\n%s", p.err, n.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
	n.t.Fatalf("xcollect serve not started within %v\n%s", startWait, n.logTail())
}

// spawn starts the process from a goroutine locked to its OS thread, so
// that Pdeathsig kills it if the test binary dies; the goroutine waits for
// it.
func spawn(path string, args []string, logf *os.File) (*proc, error) {
	p := &proc{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		defer close(p.done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command(path, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
	}()
	if err := <-started; err != nil {
		<-p.done
		return nil, err
	}
	return p, nil
}

// kill sends SIGKILL and waits for the exit. A no-op while stopped.
func (n *node) kill() {
	n.mu.Lock()
	p := n.proc
	n.proc = nil
	n.mu.Unlock()
	if p == nil {
		return
	}
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		n.t.Errorf("kill xcollect pid %d: %v", p.pid, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		n.t.Errorf("xcollect pid %d did not exit 10s after SIGKILL", p.pid)
	}
}

// running reports whether the process is alive (started, not exited).
func (n *node) running() bool {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// logLines returns the node's log lines (all starts).
func (n *node) logLines() []string {
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		return nil
	}
	return strings.Split(string(bytes.TrimSpace(b)), "\n")
}

// countLog counts log lines whose message is msg.
func (n *node) countLog(msg string) int {
	want := fmt.Sprintf("%q", msg)
	c := 0
	for _, l := range n.logLines() {
		if strings.Contains(l, `"message":`+want) {
			c++
		}
	}
	return c
}

// logTail returns the last lines of the node's log for failure messages.
func (n *node) logTail() string {
	l := n.logLines()
	if len(l) > 30 {
		l = l[len(l)-30:]
	}
	return strings.Join(l, "\n")
}
