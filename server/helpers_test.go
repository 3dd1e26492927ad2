package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/certs"
	"xcollect.dev/xcollect/server"
	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/embedded"
)

type testNode struct {
	srv   *server.Server
	store storage.Store
	addr  string // STARTTLS listener
	tls   string // direct TLS listener
}

func startNode(t testing.TB, mutate func(*server.Config)) *testNode {
	t.Helper()
	store, err := embedded.Open(filepath.Join(t.TempDir(), "x.db"), embedded.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	cert, _, _, err := certs.SelfSigned([]string{"example.com"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.Domains = []string{"example.com", "other.org"}
	cfg.C2SAddr = "127.0.0.1:0"
	cfg.C2STLSAddr = "127.0.0.1:0"
	cfg.TLS = certs.ServerConfig(cert)
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := server.New(cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		store.Close()
	})
	n := &testNode{srv: srv, store: store}
	if a := srv.Addr("c2s"); a != nil {
		n.addr = a.String()
	}
	if a := srv.Addr("c2s_tls"); a != nil {
		n.tls = a.String()
	}
	return n
}

func (n *testNode) addUser(t testing.TB, bare, pass string) {
	t.Helper()
	cred, err := storage.NewCredentials(pass, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.store.Users().CreateUser(context.Background(), bare, cred); err != nil {
		t.Fatal(err)
	}
}

// client is a mellium client session whose incoming top-level elements are
// collected as XML strings.
type client struct {
	t    *testing.T
	jid  string // bound full JID
	s    *xmpp.Session
	in   chan string
	done chan error
}

func dialMellium(t *testing.T, addr, full, pass string, mech sasl.Mechanism) (*client, error) {
	t.Helper()
	j := jid.MustParse(full)
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	s, err := xmpp.NewClientSession(ctx, j, conn,
		xmpp.StartTLS(&tls.Config{ServerName: j.Domain().String(), InsecureSkipVerify: true}),
		xmpp.SASL("", pass, mech),
		xmpp.BindResource(),
	)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	c := &client{t: t, jid: s.LocalAddr().String(), s: s, in: make(chan string, 1000), done: make(chan error, 1)}
	go func() {
		c.done <- s.Serve(xmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			var buf bytes.Buffer
			e := xml.NewEncoder(&buf)
			if _, err := xmlstream.Copy(e, xmlstream.MultiReader(xmlstream.Token(*start), r)); err != nil {
				return nil
			}
			_ = e.Flush()
			select {
			case c.in <- buf.String():
			default:
			}
			return nil
		}))
	}()
	t.Cleanup(func() { s.Close() })
	return c, nil
}

func (c *client) send(raw string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.s.Send(ctx, xml.NewDecoder(strings.NewReader(raw))); err != nil {
		c.t.Fatalf("send %s: %v", raw, err)
	}
}

// expect waits for an element containing every substring in want.
func (c *client) expect(want ...string) string {
	c.t.Helper()
	deadline := time.After(10 * time.Second) // generous: the race detector on 2 busy cores
	for {
		select {
		case got := <-c.in:
			ok := true
			for _, w := range want {
				if !strings.Contains(got, w) {
					ok = false
				}
			}
			if ok {
				return got
			}
		case <-deadline:
			c.t.Fatalf("timed out waiting for an element with %q", want)
			return ""
		}
	}
}

// expectNone checks that nothing containing want arrives within d.
func (c *client) expectNone(d time.Duration, want string) {
	c.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case got := <-c.in:
			if strings.Contains(got, want) {
				c.t.Fatalf("unexpected %s", got)
			}
		case <-deadline:
			return
		}
	}
}

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
