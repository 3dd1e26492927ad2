// Package clustertest runs real xcollect node processes as a cluster on
// 127.0.0.1, 127.0.0.2 and 127.0.0.3 over one throw-away Postgres.
package clustertest

import (
	"bytes"
	"cmp"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/internal/testnode"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmpptest"
)

var binPath string // built once by TestMain; read-only afterwards

func TestMain(m *testing.M) { testnode.Main(m, &binPath) }

// freePort is a free TCP and UDP port on host (gossip needs both).
func freePort(t *testing.T, host string) int {
	t.Helper()
	port, err := testutil.FreePort(host)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

type node struct {
	name, host string
	c2s, comp  string
	gossip     string
	http       string
	link       string
	cmd        *exec.Cmd
	mu         sync.Mutex
	log        bytes.Buffer
}

func (n *node) logs() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.log.String()
}

type lockedWriter struct{ n *node }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.n.mu.Lock()
	defer w.n.mu.Unlock()
	return w.n.log.Write(p)
}

const key = "cDttAGEVhiqnLNYkfldwicuZS5MOjNhHf4yCNXHiCLc=" // 32 random bytes, base64 (a node refuses text)

func startCluster(t *testing.T, dsn string, margin string) []*node {
	t.Helper()
	return startClusterOn(t, dsn, margin, []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, nil, clusterOpts{})
}

// startClusterOn starts one node per host; with namespaces, node i runs in
// netns[i] (ip netns exec).
// clusterOpts change every node's configuration file.
type clusterOpts struct {
	extra       string        // appended at the top level
	lease       time.Duration // cluster.queue_lease (0: the default)
	minSessions int           // cluster.steering.min_sessions (0: the default)
}

func startClusterOn(t *testing.T, dsn, margin string, hosts, netns []string, opts clusterOpts) []*node {
	t.Helper()
	var nodes []*node
	for i, host := range hosts {
		n := &node{name: fmt.Sprintf("node%d", i+1), host: host}
		port := func() int { return freePort(t, host) }
		if netns != nil { // each namespace has its own ports: use the standard ones
			std := []int{5222, 5347, 7946, 5280, 7947}
			k := 0
			port = func() int { k++; return std[k-1] }
		}
		n.c2s = fmt.Sprintf("%s:%d", host, port())
		n.comp = fmt.Sprintf("%s:%d", host, port())
		n.gossip = fmt.Sprintf("%s:%d", host, port())
		n.http = fmt.Sprintf("%s:%d", host, port())
		n.link = fmt.Sprintf("%s:%d", host, port())
		nodes = append(nodes, n)
	}
	for i, n := range nodes {
		dir := t.TempDir()
		p := filepath.Join(dir, "xcollect.yaml")
		testnode.Config{
			Name: n.name, Domain: "example.com", DataDir: dir, LogLevel: "debug",
			C2S: n.c2s, ComponentAddr: n.comp, HTTP: n.http, PostgresDSN: dsn,
			ComponentJID: "collector.example.com", ComponentSecret: "s3cret",
			ComponentExtra: "    multiple_connections: true\n",
			Extra: fmt.Sprintf("cluster:\n  bind: %q\n  link: %q\n  join: [%q]\n  key: %q\n  queue_lease: %v\n%s\n%s",
				n.gossip, n.link, nodes[0].gossip, key, cmp.Or(opts.lease, 30*time.Second), steering(margin, opts.minSessions), opts.extra),
		}.Write(t, p)
		n.cmd = exec.Command(binPath, "serve", "--config", p)
		if netns != nil {
			n.cmd = exec.Command("ip", "netns", "exec", netns[i], binPath, "serve", "--config", p)
		}
		n.cmd.Env = append(os.Environ(), "XCOLLECT_ADMIN_TOKEN="+adminToken) // for /v1/status
		n.cmd.Stderr = lockedWriter{n}
		n.cmd.Stdout = lockedWriter{n}
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = n.cmd.Process.Kill()
			_ = n.cmd.Wait()
			if t.Failed() {
				t.Logf("%s log:\n%s", n.name, n.logs())
			}
		})
	}
	for _, n := range nodes {
		testutil.WaitFor(t, 45*time.Second, n.name+" listening", func() bool { // slow under a parallel -race suite
			c, err := net.DialTimeout("tcp", n.c2s, 200*time.Millisecond)
			if err != nil {
				return false
			}
			c.Close()
			return true
		})
	}
	// all three see each other
	testutil.WaitFor(t, 20*time.Second, "membership", func() bool {
		for _, n := range nodes {
			if strings.Count(n.logs(), "node joined") < 2 {
				return false
			}
		}
		return true
	})
	return nodes
}

// steering returns the cluster.steering block; margin "" and minSessions 0
// leave the defaults.
func steering(margin string, minSessions int) string {
	var kv []string
	if margin != "" {
		kv = append(kv, "margin: "+margin)
	}
	if minSessions != 0 {
		kv = append(kv, fmt.Sprintf("min_sessions: %d", minSessions))
	}
	if len(kv) == 0 {
		return ""
	}
	return "  steering: {" + strings.Join(kv, ", ") + "}"
}

func addUsers(t *testing.T, dsn string, users ...string) {
	t.Helper()
	for _, u := range users {
		out, err := exec.Command(binPath, "user", "add", u+"@example.com", "--password", "pw", "--postgres-dsn", dsn, "--domains", "example.com").CombinedOutput()
		if err != nil {
			t.Fatalf("user add %s: %v\n%s", u, err, out)
		}
	}
}

func dial(t *testing.T, n *node, user string) *xmpptest.Conn {
	t.Helper()
	return xmpptest.DialC2S(t, n.c2s, "example.com", user, "pw", xmpptest.C2SOptions{})
}

func expect(t *testing.T, c *xmpptest.Conn, want ...string) *wire.Element {
	t.Helper()
	return c.Expect(t, 10*time.Second, func(el *wire.Element) bool {
		for _, w := range want {
			if !bytes.Contains(el.Raw, []byte(w)) {
				return false
			}
		}
		return true
	})
}

func TestThreeNodes(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.DSN()
	// A huge margin: no steering in this test.
	nodes := startCluster(t, dsn, "1000")
	addUsers(t, dsn, "alice", "bob", "dev1")

	t.Run("chat and presence across nodes", func(t *testing.T) {
		a := dial(t, nodes[0], "alice")
		b := dial(t, nodes[1], "bob")
		for _, c := range []*xmpptest.Conn{a, b} {
			_ = c.Send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
			expect(t, c, "id=\"r\"")
			_ = c.Send("<presence/>")
		}
		_ = a.Send("<presence to='bob@example.com' type='subscribe'/>")
		expect(t, b, "type=\"subscribe\"", "alice@example.com")
		_ = b.Send("<presence to='alice@example.com' type='subscribed'/>")
		expect(t, a, "<presence", b.JID) // bob's presence reaches alice on node1
		_ = b.Send("<presence><status>on node2</status></presence>")
		expect(t, a, "on node2")
		// With XEP-0198, alice's message to bob on node2 is acked once
		// node2 confirmed it (a cluster receipt), not when it left node1.
		if err := a.EnableSM(false); err != nil {
			t.Fatal(err)
		}
		_ = a.Send("<message to='" + b.JID + "' id='x1'><body>hello node2</body></message>")
		_ = a.RequestAck()
		if err := a.WaitAck(1, 10*time.Second); err != nil {
			t.Fatalf("ack for a message to another node: %v", err)
		}
		expect(t, b, "hello node2", a.JID)
		_ = b.Send("<message to='alice@example.com' id='x2' type='chat'><body>hello node1</body></message>")
		expect(t, a, "hello node1", b.JID)
	})

	t.Run("report from node1 to a processor on node3", func(t *testing.T) {
		proc := xmpptest.DialComponent(t, nodes[2].comp, "collector.example.com", "s3cret")
		dev := dial(t, nodes[0], "dev1")
		if err := dev.EnableSM(false); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			_ = dev.Send(fmt.Sprintf("<message to='collector.example.com' id='rep-%d'><report xmlns='urn:example:r'>%d</report></message>", i, i))
		}
		_ = dev.RequestAck()
		if err := dev.WaitAck(20, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			expect(t, proc, fmt.Sprintf("id='rep-%d'", i))
		}
	})
}

func TestSeeOtherHost(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.DSN()
	// Above a small floor (3 sessions) and the margin, node1 steers.
	nodes := startClusterOn(t, dsn, "0.1", []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, nil, clusterOpts{minSessions: 3})
	var users []string
	for i := 0; i < 6; i++ {
		users = append(users, fmt.Sprintf("u%d", i))
	}
	addUsers(t, dsn, append(users, "late")...)
	for _, u := range users {
		dial(t, nodes[0], u) // load node1
	}
	// Once node1's load has been gossiped, a new client is steered away
	// and completes login on the node it is sent to.
	var target string
	testutil.WaitFor(t, 20*time.Second, "see-other-host", func() bool {
		_, err := xmpptest.TryDialC2S(nodes[0].c2s, "example.com", "late", "pw", xmpptest.C2SOptions{})
		se, ok := err.(*xmpptest.StreamError)
		if !ok || se.Condition != "see-other-host" {
			return false
		}
		target = between(se.Raw, "<see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>", "</see-other-host>")
		return target != ""
	})
	if target == nodes[0].c2s {
		t.Fatalf("steered to itself: %s", target)
	}
	c := xmpptest.DialC2S(t, target, "example.com", "late", "pw", xmpptest.C2SOptions{})
	_ = c.Send("<iq type='get' id='p' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
	expect(t, c, "id=\"p\"", "result")
}

func between(s, open, end string) string {
	i := strings.Index(s, open)
	if i < 0 {
		return ""
	}
	s = s[i+len(open):]
	j := strings.Index(s, end)
	if j < 0 {
		return ""
	}
	return s[:j]
}

// TestResumeOnAnotherNode: a client whose connection to node1 broke resumes
// its XEP-0198 session on node3; unacked stanzas are resent there and new
// ones follow it.
func TestResumeOnAnotherNode(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.DSN()
	nodes := startCluster(t, dsn, "1000")
	addUsers(t, dsn, "alice", "bob")
	a := dial(t, nodes[0], "alice")
	if err := a.EnableSM(true); err != nil {
		t.Fatal(err)
	}
	a.SetAutoAck(false) // alice acks only m1, below
	_ = a.Send("<presence/>")
	b := dial(t, nodes[1], "bob")
	testutil.WaitFor(t, 10*time.Second, "alice in node2's directory", func() bool {
		d, _ := status(t, nodes[1].http)
		return d >= 1
	})
	for _, m := range []string{"m1", "m2", "m3"} {
		_ = b.Send("<message to='" + a.JID + "' id='" + m + "'><body>" + m + "</body></message>")
		expect(t, a, ">"+m+"<")
	}
	a.Drop() // the connection breaks without </stream:stream>
	time.Sleep(200 * time.Millisecond)
	_ = b.Send("<message to='" + a.JID + "' id='m4'><body>m4</body></message>")
	time.Sleep(200 * time.Millisecond)
	a2 := xmpptest.DialC2S(t, nodes[2].c2s, "example.com", "alice", "pw", xmpptest.C2SOptions{Resume: &xmpptest.Resume{PrevID: a.SMID, H: 1}})
	for _, m := range []string{"m2", "m3", "m4"} {
		expect(t, a2, ">"+m+"<")
	}
	_ = b.Send("<message to='" + a.JID + "' id='m5'><body>m5</body></message>")
	expect(t, a2, ">m5<")
	// It moves again, to node 2: node 1 (named in the id) forwards the
	// request to node 3, which holds the session now.
	a2.SetAutoAck(false)
	_ = b.Send("<message to='" + a.JID + "' id='m6'><body>m6</body></message>")
	expect(t, a2, ">m6<")
	a2.Drop()
	time.Sleep(200 * time.Millisecond)
	a3 := xmpptest.DialC2S(t, nodes[1].c2s, "example.com", "alice", "pw", xmpptest.C2SOptions{Resume: &xmpptest.Resume{PrevID: a.SMID, H: a2.Received() - 1}})
	expect(t, a3, ">m6<") // the client says it handled everything but m6
	// a resume for a session whose owner no longer has it fails cleanly
	_, err := xmpptest.TryDialC2S(nodes[1].c2s, "example.com", "alice", "pw", xmpptest.C2SOptions{Resume: &xmpptest.Resume{PrevID: "node9~gone", H: 0}})
	if _, ok := err.(*xmpptest.ResumeFailed); !ok {
		t.Fatalf("resume of an unknown session: %v", err)
	}
}

// TestConflictAndSharedQueueAcrossNodes: binding a full JID that is live on
// another node replaces the old session there with <conflict/>; a
// processor connected on two nodes shares one queue and each sender's
// reports keep their order.
func TestConflictAndSharedQueueAcrossNodes(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.DSN()
	nodes := startCluster(t, dsn, "1000")
	addUsers(t, dsn, "alice", "s0", "s1", "s2", "s3")

	t.Run("conflict", func(t *testing.T) {
		first := xmpptest.DialC2S(t, nodes[0].c2s, "example.com", "alice", "pw", xmpptest.C2SOptions{Resource: "same"})
		testutil.WaitFor(t, 10*time.Second, "alice/same in node2's directory", func() bool {
			d, _ := status(t, nodes[1].http)
			return d >= 1
		})
		second := xmpptest.DialC2S(t, nodes[1].c2s, "example.com", "alice", "pw", xmpptest.C2SOptions{Resource: "same"})
		err := first.Err(10 * time.Second)
		if se, ok := err.(*xmpptest.StreamError); !ok || se.Condition != "conflict" {
			t.Fatalf("old session on node1 ended with %v, want conflict", err)
		}
		_ = second.Send("<iq type='get' id='p' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
		expect(t, second, "id=\"p\"", "result")
	})

	t.Run("processor on two nodes", func(t *testing.T) {
		p1 := xmpptest.DialComponent(t, nodes[0].comp, "collector.example.com", "s3cret")
		p2 := xmpptest.DialComponent(t, nodes[2].comp, "collector.example.com", "s3cret")
		for _, p := range []*xmpptest.Conn{p1, p2} {
			if err := p.EnableSM(false); err != nil {
				t.Fatal(err)
			}
		}
		type rec struct {
			mu   sync.Mutex
			seq  map[string][]int // sender → sequence numbers in arrival order
			byPr [2]int
		}
		r := &rec{seq: map[string][]int{}}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i, p := range []*xmpptest.Conn{p1, p2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					el, err := p.Next(100 * time.Millisecond)
					if err != nil {
						continue
					}
					var sender string
					var n int
					if _, err := fmt.Sscanf(el.Get("id"), "o-%2s-%d", &sender, &n); err != nil {
						continue
					}
					r.mu.Lock()
					r.seq[sender] = append(r.seq[sender], n)
					r.byPr[i]++
					r.mu.Unlock()
				}
			}()
		}
		const per = 150
		var swg sync.WaitGroup
		for i := 0; i < 4; i++ {
			c := dial(t, nodes[i%3], fmt.Sprintf("s%d", i))
			swg.Add(1)
			go func() {
				defer swg.Done()
				for n := 0; n < per; n++ {
					_ = c.Send(fmt.Sprintf("<message to='collector.example.com' id='o-s%d-%d'><r xmlns='urn:example:r'/></message>", i, n))
				}
			}()
		}
		swg.Wait()
		testutil.WaitFor(t, 30*time.Second, "all reports delivered", func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			total := 0
			for _, s := range r.seq {
				total += len(s)
			}
			return total >= 4*per
		})
		close(stop)
		wg.Wait()
		r.mu.Lock()
		defer r.mu.Unlock()
		for sender, s := range r.seq {
			for k := 1; k < len(s); k++ {
				if s[k] <= s[k-1] {
					t.Fatalf("sender %s out of order: %v", sender, s)
				}
			}
		}
		t.Logf("processor on node1 got %d, on node3 got %d", r.byPr[0], r.byPr[1])
	})
}
