package server_test

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmpp"

	"xcollect.dev/xcollect/internal/testnode"
	"xcollect.dev/xcollect/server"
	"xcollect.dev/xcollect/storage"
)

// testNode names the parts of a testnode.InProcess the server tests use.
type testNode struct {
	node  *testnode.InProcess
	srv   *server.Server
	store storage.Store
	addr  string // STARTTLS listener
	tls   string // direct TLS listener
}

// startNode starts an in-process node serving example.com and other.org
// with STARTTLS and direct-TLS c2s; mutate adjusts its configuration.
func startNode(t testing.TB, mutate func(*server.Config)) *testNode {
	t.Helper()
	n := testnode.StartInProcess(t, testnode.InProcessOptions{
		Domains: []string{"example.com", "other.org"}, DirectTLS: true, Server: mutate,
	})
	return &testNode{node: n, srv: n.Server, store: n.Store, addr: n.C2S, tls: n.C2STLS}
}

func (n *testNode) addUser(t testing.TB, bare, pass string) { n.node.AddUser(t, bare, pass) }

// client is a testnode.MelliumClient under the names the server tests
// use.
type client struct {
	*testnode.MelliumClient
	t    *testing.T
	jid  string // bound full JID
	s    *xmpp.Session
	in   chan string
	done chan error
}

func dialMellium(t *testing.T, addr, full, pass string, mech sasl.Mechanism) (*client, error) {
	t.Helper()
	m, err := testnode.DialMellium(t, addr, full, pass, mech)
	if err != nil {
		return nil, err
	}
	return &client{MelliumClient: m, t: t, jid: m.JID, s: m.Session, in: m.In, done: m.Done}, nil
}

func (c *client) send(raw string) { c.t.Helper(); c.Send(raw) }

// expect waits for an element containing every substring in want.
func (c *client) expect(want ...string) string { c.t.Helper(); return c.Expect(want...) }

// expectNone checks that nothing containing want arrives within d.
func (c *client) expectNone(d time.Duration, want string) { c.t.Helper(); c.ExpectNone(d, want) }

// raw is a plain TCP client that speaks XML by hand (stream errors).
type raw struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *raw {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &raw{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (r *raw) write(s string) {
	_ = r.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.conn.Write([]byte(s)); err != nil {
		r.t.Logf("write: %v", err)
	}
}

// readUntil reads until want appears or the connection closes; it returns
// everything read.
func (r *raw) readUntil(want string, d time.Duration) string {
	r.t.Helper()
	var sb strings.Builder
	_ = r.conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for !strings.Contains(sb.String(), want) {
		n, err := r.r.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return sb.String()
}

func header(to string) string {
	return fmt.Sprintf("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>", to)
}

// login authenticates a raw plaintext client with SCRAM-SHA-256 and binds
// resource (the node must run with RequireTLS false).
func (r *raw) login(user, domain, pass, resource string) {
	r.t.Helper()
	r.loginUntilBind(user, domain, pass)
	r.write("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>" + resource + "</resource></bind></iq>")
	if got := r.readUntil("</iq>", 5*time.Second); !strings.Contains(got, "<jid>") {
		r.t.Fatalf("bind: %s", got)
	}
}

// loginUntilBind authenticates and restarts the stream, stopping before
// resource binding.
func (r *raw) loginUntilBind(user, domain, pass string) {
	r.t.Helper()
	r.write(header(domain))
	r.readUntil("</stream:features>", 5*time.Second)
	neg := sasl.NewClient(sasl.ScramSha256, sasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(pass), nil
	}))
	_, first, err := neg.Step(nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>" + b64(first) + "</auth>")
	ch := between(r.readUntil("</challenge>", 5*time.Second), ">", "</challenge>")
	_, final, err := neg.Step(unb64(r.t, ch))
	if err != nil {
		r.t.Fatal(err)
	}
	r.write("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + b64(final) + "</response>")
	if got := r.readUntil("</success>", 5*time.Second); !strings.Contains(got, "<success") {
		r.t.Fatalf("auth: %s", got)
	}
	r.write(header(domain))
	r.readUntil("</stream:features>", 5*time.Second)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func unb64(t *testing.T, s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("base64 %q: %v", s, err)
	}
	return b
}

// between returns the text after the last open marker before end.
func between(s, open, end string) string {
	i := strings.Index(s, end)
	if i < 0 {
		return ""
	}
	s = s[:i]
	j := strings.LastIndex(s, open)
	return s[j+len(open):]
}
