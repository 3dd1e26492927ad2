package interop_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"mellium.im/sasl"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/testnode"
	"xcollect.dev/xcollect/server"
	"xcollect.dev/xcollect/storage"
)

const (
	domain = "example.com"
	// execTimeout bounds every external client process.
	execTimeout = 30 * time.Second
	// waitTimeout bounds every wait for one observation.
	waitTimeout = 15 * time.Second
	// installHint is how a missing tool is installed.
	installHint = "run: make test-deps (or: sudo scripts/test-deps.sh)"
	// systemPython has slixmpp from Debian; a python3 earlier on PATH
	// (pyenv) may not.
	systemPython = "/usr/bin/python3"
)

// options configure one node of the harness.
type options struct {
	// users maps bare JIDs to passwords; created in the store before start.
	users map[string]string
	// components are served on a XEP-0114 listener when not empty.
	components []component.Spec
	// componentTLS also serves them over direct TLS (listeners.component_tls).
	componentTLS bool
	// componentCfg, when set, adjusts the component config (timeouts).
	componentCfg func(*component.Config)
}

// node is one in-process xcollect node: c2s with STARTTLS required on a
// random 127.0.0.1 port, a self-signed certificate for example.com, an
// embedded store in a temp dir, and optionally a component listener.
type node struct {
	srv     *server.Server
	store   storage.Store
	dir     string // temp dir for the store and the clients' files
	c2s     string // STARTTLS listener host:port
	comp    string // component listener host:port, "" without components
	compTLS string // direct-TLS component listener, "" unless componentTLS
}

func startNode(t *testing.T, o options) *node {
	t.Helper()
	in := testnode.StartInProcess(t, testnode.InProcessOptions{
		Domains: []string{domain}, RequireTLS: true, Users: o.users,
		Components: o.components, ComponentTLS: o.componentTLS, Component: o.componentCfg, NodeName: "interop",
	})
	return &node{srv: in.Server, store: in.Store, dir: in.Dir, c2s: in.C2S, comp: in.Component, compTLS: in.ComponentTLS}
}

func (n *node) port() string {
	_, p, _ := net.SplitHostPort(n.c2s)
	return p
}

// needTool fails the test with the install command when name is not on PATH.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found on PATH: %s", name, installHint)
	}
	return p
}

// needSlixmpp fails the test with the install command when the system
// Python cannot import slixmpp.
func needSlixmpp(t *testing.T) {
	t.Helper()
	needPythonModule(t, "slixmpp")
}

// needAioxmpp is needSlixmpp for aioxmpp (Debian python3-aioxmpp).
func needAioxmpp(t *testing.T) {
	t.Helper()
	needPythonModule(t, "aioxmpp")
}

func needPythonModule(t *testing.T, module string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, systemPython, "-c", "import "+module).CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import %s (%v: %s): %s", systemPython, module, err, bytes.TrimSpace(out), installHint)
	}
}

// needNodePackages fails the test with the install command when node or the
// npm packages in node/ are missing.
func needNodePackages(t *testing.T, pkgs ...string) {
	t.Helper()
	needTool(t, "node")
	for _, p := range pkgs {
		if _, err := os.Stat(filepath.Join("node", "node_modules", p, "package.json")); err != nil {
			t.Fatalf("npm package %s is not installed in internal/interop/node: %s", p, installHint)
		}
	}
}

// event is one JSON line a client script printed.
type event map[string]any

func (e event) str(k string) string {
	s, _ := e[k].(string)
	return s
}

func (e event) String() string {
	b, _ := json.Marshal(map[string]any(e))
	return string(b)
}

// proc is a running client process whose stdout JSON lines are collected.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	cancel context.CancelFunc
	stderr bytes.Buffer

	mu     sync.Mutex
	events []event
	notify chan struct{} // closed and replaced on every new line
	exited chan struct{} // closed when the process ended and stdout is drained
	err    error         // Wait's result, set before exited closes
}

// startProc runs name with args under execTimeout, in dir when not "", with
// env added to the environment. The process is killed at cleanup.
func startProc(t *testing.T, dir string, env []string, name string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 2 * time.Second
	p := &proc{t: t, name: filepath.Base(name), cmd: cmd, cancel: cancel, notify: make(chan struct{}), exited: make(chan struct{})}
	cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	go p.read(out)
	t.Cleanup(func() {
		p.cancel()
		<-p.exited
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, p.stderrText())
		}
	})
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (p *proc) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			p.t.Logf("%s: %s", p.name, line)
			continue
		}
		p.t.Logf("%s: %s", p.name, line)
		p.mu.Lock()
		p.events = append(p.events, e)
		close(p.notify)
		p.notify = make(chan struct{})
		p.mu.Unlock()
	}
	err := p.cmd.Wait()
	p.mu.Lock()
	p.err = err
	close(p.notify)
	p.notify = make(chan struct{})
	p.mu.Unlock()
	close(p.exited)
}

// find returns the first event for which match is true.
func (p *proc) find(match func(event) bool) (event, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.events {
		if match(e) {
			return e, true
		}
	}
	return nil, false
}

// await waits up to waitTimeout for an event matching match; what describes
// it in the failure.
func (p *proc) await(what string, match func(event) bool) event {
	p.t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		ch := p.notify
		p.mu.Unlock()
		if e, ok := p.find(match); ok {
			return e
		}
		select {
		case <-ch:
		case <-p.exited:
			if e, ok := p.find(match); ok {
				return e
			}
			p.t.Fatalf("%s exited (%v) without %s; events: %v", p.name, p.err, what, p.all())
		case <-deadline.C:
			p.t.Fatalf("%s: no %s within %v; events: %v", p.name, what, waitTimeout, p.all())
		}
	}
}

// wait waits for the process to end and fails the test if it failed.
func (p *proc) wait() {
	p.t.Helper()
	<-p.exited
	if p.err != nil {
		p.t.Fatalf("%s: %v; events: %v", p.name, p.err, p.all())
	}
}

func (p *proc) all() []event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]event(nil), p.events...)
}

func (p *proc) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// is matches events whose fields equal kv (pairs of key, value).
func is(kv ...string) func(event) bool {
	return func(e event) bool {
		for i := 0; i+1 < len(kv); i += 2 {
			if e.str(kv[i]) != kv[i+1] {
				return false
			}
		}
		return true
	}
}

// goClient is a testnode.MelliumClient (STARTTLS, SCRAM-SHA-256) whose
// Expect waits waitTimeout.
type goClient struct {
	*testnode.MelliumClient
	t   *testing.T
	jid string // bound full JID
}

func dialGo(t *testing.T, addr, full, pass string) *goClient {
	t.Helper()
	m, err := testnode.DialMellium(t, addr, full, pass, sasl.ScramSha256)
	if err != nil {
		t.Fatalf("go client %s: %v", full, err)
	}
	m.Timeout = waitTimeout
	return &goClient{MelliumClient: m, t: t, jid: m.JID}
}

func (c *goClient) send(raw string) { c.t.Helper(); c.Send(raw) }

// expect waits up to waitTimeout for an element containing every substring
// in want.
func (c *goClient) expect(want ...string) string { c.t.Helper(); return c.Expect(want...) }

// ping sends a XEP-0199 ping to the server and waits for the result, so
// that everything c sent before has been processed by its session.
func (c *goClient) ping(id string) {
	c.t.Helper()
	c.send(fmt.Sprintf("<iq type='get' id='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>", id, domain))
	c.expect(`id="`+id+`"`, `type="result"`)
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// queuedRows returns the rows waiting in component's durable queue.
func (n *node) queuedRows(t *testing.T, component string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := n.store.Queue().Stats(ctx, component)
	if err != nil {
		t.Fatalf("queue stats: %v", err)
	}
	var rows int64
	for _, s := range st {
		rows += s.Rows
	}
	return rows
}
