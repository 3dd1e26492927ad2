package testnode

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/testutil"
)

// Names every node uses.
const (
	Domain    = "localhost"
	Component = "collector.localhost"
	Secret    = "s3cret"
	Password  = "pw-123456"
	startWait = 60 * time.Second // a node start on a loaded 2-core box
)

// Build builds ./cmd/xcollect into dir and returns the binary's path. Call
// it from TestMain.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "xcollect")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "xcollect.dev/xcollect/cmd/xcollect").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/xcollect: %v\n%s", err, out)
	}
	return bin, nil
}

// Options configure Start.
type Options struct {
	// Users to create (localparts); their password is Password.
	Users []string
	// ResumeTimeout is stream_management.resume_timeout ("" = default 5m).
	ResumeTimeout string
}

// Node is one running xcollect serve.
type Node struct {
	C2S, Comp string // host:port
	Dir       string
	bin       string
	cfg       string
	log       *lockedBuffer
	cmd       *exec.Cmd
	done      chan struct{}
}

// Start writes a config, adds the users and starts the node; the node is
// killed at the test's cleanup.
func Start(t testing.TB, bin string, opts Options) *Node {
	t.Helper()
	dir := t.TempDir()
	n := &Node{C2S: testutil.FreeAddr(t), Comp: testutil.FreeAddr(t), Dir: dir, bin: bin, cfg: filepath.Join(dir, "xcollect.yaml"),
		log: &lockedBuffer{}, done: make(chan struct{})}
	Config{
		Name: "sdk-test", Domain: Domain, DataDir: filepath.Join(dir, "data"), LogLevel: "debug",
		C2S: n.C2S, ComponentAddr: n.Comp, ComponentJID: Component, ComponentSecret: Secret,
		ResumeTimeout: opts.ResumeTimeout,
	}.Write(t, n.cfg)
	for _, u := range opts.Users {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := exec.CommandContext(ctx, bin, "user", "add", u+"@"+Domain, "--password", Password, "--config", n.cfg).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("xcollect user add %s: %v\n%s", u, err, out)
		}
	}
	n.cmd = exec.Command(bin, "serve", "--config", n.cfg)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start xcollect serve: %v", err)
	}
	go func() { // owned by the node: ends when the process exits, which Stop ensures
		_ = n.cmd.Wait() // the exit status is in the log
		close(n.done)
	}()
	t.Cleanup(func() {
		n.Stop()
		if t.Failed() {
			t.Logf("node log (tail):\n%s", n.LogTail(4000))
		}
	})
	deadline := time.Now().Add(startWait)
	for !strings.Contains(n.log.String(), "xcollect node started") {
		select {
		case <-n.done:
			t.Fatalf("xcollect serve exited at start:\n%s", n.LogTail(4000))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("xcollect serve not started within %v:\n%s", startWait, n.LogTail(4000))
		}
	}
	return n
}

// Stop terminates the node (SIGTERM, then SIGKILL after 10 s) and waits.
func (n *Node) Stop() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM) // it may have exited just now
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill() // as above
		<-n.done
	}
}

// Log returns the node's log so far.
func (n *Node) Log() string { return n.log.String() }

// LogTail returns the last max bytes of the log.
func (n *Node) LogTail(max int) string {
	s := n.log.String()
	if len(s) > max {
		s = s[len(s)-max:]
	}
	return s
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Main is the TestMain of a package whose tests run nodes: it builds the
// binary into a temporary directory, stores its path in *bin, runs the
// tests and removes the directory.
func Main(m *testing.M, bin *string) {
	dir, err := os.MkdirTemp("", "xcollect-test.")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin, err = Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir) //nolint:errcheck // best effort before exit
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir) //nolint:errcheck // best effort: a leftover temp dir is harmless
	os.Exit(code)
}
