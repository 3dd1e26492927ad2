package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmpptest"
)

// The third-party client scripts of internal/interop (see
// internal/interop/testdata/slixmpp_logins.py for their protocol).
var (
	interopDir   = filepath.Join("..", "interop")
	systemPython = "/usr/bin/python3" // has slixmpp and aioxmpp from Debian
)

// loginClient runs one library's script: n sessions of user, one after
// another with gap seconds between them, against addr.
type loginClient struct {
	name, prefix string
	cmd          func(ctx context.Context, host, port, user string, n int, gap string) *exec.Cmd
}

func loginClients() []loginClient {
	python := func(script string) func(ctx context.Context, host, port, user string, n int, gap string) *exec.Cmd {
		return func(ctx context.Context, host, port, user string, n int, gap string) *exec.Cmd {
			return exec.CommandContext(ctx, systemPython, filepath.Join(interopDir, "testdata", script), host, port, "example.com", user, "pw", fmt.Sprint(n), gap)
		}
	}
	return []loginClient{
		{"slixmpp", "slix", python("slixmpp_logins.py")},
		{"aioxmpp", "aio", python("aioxmpp_logins.py")},
		{"xmpp.js", "node", func(ctx context.Context, host, port, user string, n int, gap string) *exec.Cmd {
			c := exec.CommandContext(ctx, "node", "logins.js", host, port, "example.com", user, "pw", fmt.Sprint(n), gap)
			c.Dir = filepath.Join(interopDir, "node")
			c.Env = append(os.Environ(), "NODE_TLS_REJECT_UNAUTHORIZED=0")
			return c
		}},
	}
}

// needClients fails the test with the install command when a library is
// missing.
func needClients(t *testing.T) {
	t.Helper()
	const hint = "run: make test-deps (or: sudo scripts/test-deps.sh)"
	for _, m := range []string{"slixmpp", "aioxmpp"} {
		if out, err := exec.Command(systemPython, "-c", "import "+m).CombinedOutput(); err != nil {
			t.Fatalf("%s cannot import %s (%v: %s): %s", systemPython, m, err, bytes.TrimSpace(out), hint)
		}
	}
	if _, err := os.Stat(filepath.Join(interopDir, "node", "node_modules", "@xmpp", "client", "package.json")); err != nil {
		t.Fatalf("@xmpp/client is not installed in internal/interop/node: %s", hint)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node not found: %s", hint)
	}
}

// runLogins runs c to completion (bounded by 40 s) and returns the JSON
// events it printed, and its output when it failed.
func runLogins(c loginClient, addr, user string, n int, gap string) ([]map[string]string, error) {
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := c.cmd(ctx, host, port, user, n, gap)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	var events []map[string]string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		m := map[string]string{}
		for k, v := range e {
			m[k] = fmt.Sprint(v)
		}
		events = append(events, m)
	}
	if err != nil {
		return events, fmt.Errorf("%s: %v\n%s", c.name, err, out)
	}
	return events, nil
}

// TestDefaultClusterAcceptsStandardClients: a 3-node cluster with the
// default steering settings accepts slixmpp, aioxmpp and @xmpp/client on
// every node, several sessions each, while the other nodes are empty: no
// <see-other-host/> (most clients do not follow it; @xmpp/client does, and
// would end up on another node). Each session also gets its own presence.
func TestDefaultClusterAcceptsStandardClients(t *testing.T) {
	needClients(t)
	pg := pgtest.Start(t)
	dsn := pg.DSN()
	nodes := startCluster(t, dsn, "") // default steering
	var users []string
	for _, c := range loginClients() {
		for _, n := range nodes {
			users = append(users, c.prefix+n.name)
		}
	}
	addUsers(t, dsn, users...)
	const sessions = 3
	for _, n := range nodes {
		// Node by node, the three libraries at once; the gap lets the
		// node's load reach the others (gossiped every second) before the
		// next login, as it would in a real deployment.
		var wg sync.WaitGroup
		for _, c := range loginClients() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				user := c.prefix + n.name
				events, err := runLogins(c, n.c2s, user, sessions, "1.2")
				if err != nil {
					t.Errorf("%s on %s: %v", c.name, n.name, err)
					return
				}
				for k := range sessions {
					full := fmt.Sprintf("%s@example.com/%s%d", user, c.prefix, k)
					if e := find(events, "online", full); e == nil {
						t.Errorf("%s on %s: %s never came online: %v", c.name, n.name, full, events)
					} else if e["peer"] != n.c2s {
						t.Errorf("%s on %s: %s ended up connected to %s (steered away)", c.name, n.name, full, e["peer"])
					}
					if find(events, "self_presence", full) == nil {
						t.Errorf("%s on %s: %s never got its own presence: %v", c.name, n.name, full, events)
					}
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
}

func find(events []map[string]string, event, jid string) map[string]string {
	for _, e := range events {
		if e["event"] == event && e["jid"] == jid {
			return e
		}
	}
	return nil
}

// TestRFCBehaviourAcrossNodes: a user's available presence reaches all of
// its available resources, the sender included, when they are on other
// nodes (RFC 6121 §4.2.2, §4.4.2); a message to a bare JID keeps its 'to'
// when it crosses nodes, from a client and from a component.
func TestRFCBehaviourAcrossNodes(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.DSN()
	nodes := startCluster(t, dsn, "")
	addUsers(t, dsn, "alice", "bob")
	presence := func(from, text string) func(*wire.Element) bool {
		return func(el *wire.Element) bool {
			return el.Name.Local == "presence" && el.Get("type") == "" && el.Get("from") == from && bytes.Contains(el.Raw, []byte(text))
		}
	}

	t.Run("own presence", func(t *testing.T) {
		a1 := dial(t, nodes[0], "alice")
		_ = a1.Send("<presence><status>on node1</status></presence>")
		a1.Expect(t, 10*time.Second, presence(a1.JID, "on node1"))
		testutil.WaitFor(t, 10*time.Second, "alice's first resource in node2's directory", func() bool {
			d, _ := status(t, nodes[1].http)
			return d >= 1
		})
		a2 := dial(t, nodes[1], "alice")
		_ = a2.Send("<presence><status>on node2</status></presence>")
		for _, c := range []*xmpptest.Conn{a2, a1} {
			c.Expect(t, 10*time.Second, presence(a2.JID, "on node2"))
		}
		a2.Expect(t, 10*time.Second, presence(a1.JID, "on node1")) // the other resource, by probe
		_ = a1.Send("<presence><show>away</show><status>later</status></presence>")
		for _, c := range []*xmpptest.Conn{a1, a2} {
			c.Expect(t, 10*time.Second, presence(a1.JID, "later"))
		}
	})

	t.Run("bare JID keeps to", func(t *testing.T) {
		b := dial(t, nodes[1], "bob")
		_ = b.Send("<presence/>")
		_ = b.Send("<iq type='get' id='p1' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
		expect(t, b, `id="p1"`, "result") // the presence was handled
		a := dial(t, nodes[0], "alice")
		proc := xmpptest.DialComponent(t, nodes[2].comp, "collector.example.com", "s3cret")
		msg := func(id string) func(*wire.Element) bool {
			return func(el *wire.Element) bool { return el.Name.Local == "message" && el.Get("id") == id }
		}
		var got *wire.Element
		testutil.WaitFor(t, 10*time.Second, "bob in node1's directory", func() bool {
			_ = a.Send("<message to='bob@example.com' id='c1' type='chat'><body>hi</body></message>")
			el, err := b.Next(300 * time.Millisecond)
			if err == nil && msg("c1")(el) {
				got = el
			}
			return got != nil
		})
		if got.Get("to") != "bob@example.com" || got.Get("from") != a.JID {
			t.Fatalf("client → bare JID across nodes arrived as %s", got.Raw)
		}
		_ = proc.Send("<message from='collector.example.com' to='bob@example.com' id='k1'><body>cmd</body></message>")
		if el := b.Expect(t, 10*time.Second, msg("k1")); el.Get("to") != "bob@example.com" {
			t.Fatalf("component on node3 → bare JID on node2 arrived as %s", el.Raw)
		}
	})
}
