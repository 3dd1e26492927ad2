package cluster

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/testutil"
)

// rawLinkHello is the dumbest client of the link port: a plain TCP
// connection that speaks the keyless link handshake by hand as name and
// returns the acceptor's status byte (0 = accepted) and the connection.
// It knows no key and sends no proof.
func rawLinkHello(t *testing.T, addr, name string) (byte, net.Conn) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	hello := append([]byte(linkMagic), byte(len(name)))
	hello = append(hello, name...)
	nonce := make([]byte, nonceSize)
	rand.Read(nonce) //nolint:errcheck // never fails
	hello = append(hello, nonce...)
	if _, err := conn.Write(hello); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	if _, _, err := readHello(r); err != nil {
		t.Logf("acceptor hello: %v", err)
		return 0xff, conn
	}
	if _, err := readProof(r); err != nil {
		t.Logf("acceptor proof: %v", err)
		return 0xff, conn
	}
	if err := writeProof(conn, nil); err != nil {
		t.Logf("write proof: %v", err)
		return 0xff, conn
	}
	var st [1]byte
	if _, err := io.ReadFull(r, st[:]); err != nil {
		t.Logf("status: %v", err)
		return 0xff, conn
	}
	return st[0], conn
}

// injectStanza writes one stanza frame for to on an accepted raw link.
func injectStanza(t *testing.T, conn net.Conn, to string, stanza []byte) {
	t.Helper()
	w := bufio.NewWriter(conn)
	if err := writeOut(w, outFrame{typ: frameStanza, to: to, body: stanza}); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Logf("inject: %v", err)
	}
}

// TestKeylessLinkInjection: a raw TCP client on the link port must not
// inject a stanza with a forged sender. Before the fix a keyless node
// accepted it (link up as "evil", the stanza delivered). Now a keyless
// cluster does not start, and the test-only insecure mode still refuses a
// client that is not a member.
func TestKeylessLinkInjection(t *testing.T) {
	cfg := DefaultLocalConfig()
	cfg.NodeName = "n0"
	_, err := New(cfg, newRec().all())
	if !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "head -c 32 /dev/urandom | base64") {
		t.Fatalf("New without a key: %v, want ErrNoKey saying how to make one", err)
	}
	t.Logf("keyless config: %v", err)

	var logs testutil.SyncBuffer
	a := startNode(t, "n0", func(c *Config) {
		c.SecretKey, c.Insecure = nil, true
		c.Logger = zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), &logs))
	})
	if !strings.Contains(logs.String(), "INSECURE CLUSTER") {
		t.Error("insecure mode started without its warning")
	}
	start := time.Now()
	st, conn := rawLinkHello(t, a.meta.Link, "evil")
	t.Logf("raw client status %d after %v", st, time.Since(start))
	if st != statusNotMember {
		t.Errorf("raw client status %d, want %d (not a member)", st, statusNotMember)
	}
	forged := []byte("<message from='ceo@x/office' to='bob@x/r'><body>wire the money</body></message>")
	injectStanza(t, conn, "bob@x/r", forged) // whatever the status said
	time.Sleep(300 * time.Millisecond)       // give a delivery the time to happen
	a.h.mu.Lock()
	got := a.h.stanzas["bob@x/r"]
	a.h.mu.Unlock()
	if got != nil {
		t.Fatalf("a raw TCP client injected a stanza with a forged sender: %s", got)
	}
	if a.linkCount() != 0 {
		t.Fatal("raw client got a link")
	}
}

// TestWeakKeysRefused: keys that cannot be random are refused with the way
// to make a good one; random ones of every AES size pass.
func TestWeakKeysRefused(t *testing.T) {
	for _, k := range []string{
		"0123456789abcdef0123456789abcdef", // text
		"correct horse battery staple!!!!", // a passphrase
		"MDEyMzQ1Njc4OWFiY2RlZg==",         // base64 not decoded (24 bytes)
		"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01",
	} {
		err := CheckKey([]byte(k))
		if !errors.Is(err, ErrWeakKey) || !strings.Contains(err.Error(), "/dev/urandom") {
			t.Errorf("CheckKey(%q) = %v, want ErrWeakKey", k, err)
		}
	}
	if err := CheckKey([]byte("short")); err == nil {
		t.Error("5-byte key accepted")
	}
	for _, n := range []int{16, 24, 32} {
		k := make([]byte, n)
		rand.Read(k)                        //nolint:errcheck // never fails
		if err := CheckKey(k); err != nil { // text by chance: 1 in 7 million
			t.Errorf("random %d-byte key: %v", n, err)
		}
	}
}

// TestKeyHolderNotMemberRefused: a connection that completes the TLS and
// HMAC handshake with the right key but names a node that is not in the
// membership gets no link.
func TestKeyHolderNotMemberRefused(t *testing.T) {
	a := startNode(t, "n0", nil)
	lt, err := newLinkTLS(testKey)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", a.meta.Link, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = dialLink(t.Context(), conn, lt, testKey, "stranger", "n0")
	t.Logf("handshake as a non-member: %v", err)
	if err == nil {
		t.Fatal("a key holder that is not a member was accepted")
	}
	if a.linkCount() != 0 {
		t.Fatal("non-member got a link")
	}
}

// dialAs runs the full link handshake with the cluster key from local
// (nil: any address) to addr, naming itself name.
func dialAs(t *testing.T, local *net.TCPAddr, addr, name, peer string) error {
	t.Helper()
	d := net.Dialer{Timeout: time.Second, LocalAddr: local}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lt, err := newLinkTLS(testKey)
	if err != nil {
		t.Fatal(err)
	}
	_, err = dialLink(t.Context(), conn, lt, testKey, name, peer)
	return err
}

// TestLinkFromOtherAddressRefused: a key holder that names a member but
// connects from another address than the member's is refused at once.
func TestLinkFromOtherAddressRefused(t *testing.T) {
	ns := startCluster(t, 2, nil) // both on 127.0.0.1
	start := time.Now()
	err := dialAs(t, &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, ns[1].meta.Link, "n0", "n1")
	t.Logf("as n0 from 127.0.0.2: %v (%v)", err, time.Since(start))
	if !errors.Is(err, ErrNotMember) {
		t.Fatalf("impersonation from another address: %v, want ErrNotMember", err)
	}
	if time.Since(start) > memberGrace {
		t.Error("a known member at another address waited for the grace period")
	}
	waitConnected(t, ns) // the real link is untouched
}

// TestDepartedNodeCannotLink: once a node left, a link in its name (with
// the key, from its address) is refused.
func TestDepartedNodeCannotLink(t *testing.T) {
	a := startNode(t, "n0", nil)
	b := startNode(t, "n1", nil, a.gossipAddr())
	waitConnected(t, []tnode{a, b})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "n0 sees n1 leave", func() bool { return len(a.Nodes()) == 1 })
	err := dialAs(t, nil, a.meta.Link, "n1", "n0")
	t.Logf("as departed n1: %v", err)
	if !errors.Is(err, ErrNotMember) {
		t.Fatalf("departed node linked: %v, want ErrNotMember", err)
	}
	if a.linkCount() != 0 {
		t.Fatal("departed node has a link")
	}
}

// TestJoinRaceLinkRetries: the dialer knows the acceptor before the
// acceptor knows the dialer. The acceptor refuses (after memberGrace), the
// dialer retries, and the link comes up once the acceptor has the member.
func TestJoinRaceLinkRetries(t *testing.T) {
	var logs testutil.SyncBuffer
	hidden := "n0"
	b := startNodeHook(t, "n1", func(c *Config) {
		c.Logger = zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), &logs)).Level(zerolog.InfoLevel)
	}, func(c *Cluster) { c.hideMember.Store(&hidden) })
	a := startNode(t, "n0", nil, b.gossipAddr()) // n0 < n1: n0 dials
	testutil.WaitFor(t, 5*time.Second, "n0 sees n1", func() bool { return len(a.Nodes()) == 2 })
	testutil.WaitFor(t, 10*time.Second, "n1 refuses the unknown n0", func() bool {
		return strings.Contains(logs.String(), "is not in the membership")
	})
	if a.linkCount() != 0 || b.linkCount() != 0 {
		t.Fatal("link up with a node the acceptor does not know")
	}
	b.hideMember.Store(nil)
	a.SetLoad(Load{Sessions: 1}) // a metadata update: n1 learns of n0
	start := time.Now()
	waitConnected(t, []tnode{a, b})
	t.Logf("link up %v after n1 learnt of n0", time.Since(start))
}

// TestBindAddressHonoured: a node bound to 127.0.0.2 listens for gossip
// and links there only (not on 127.0.0.1), dials its links from there, and
// links with a node on 127.0.0.1.
func TestBindAddressHonoured(t *testing.T) {
	a := startNode(t, "n0", func(c *Config) { c.BindAddr = "127.0.0.2" })
	_, linkPort, _ := net.SplitHostPort(a.ln.Addr().String())
	gossipHost, gossipPort, _ := net.SplitHostPort(a.gossipAddr())
	if h, _, _ := net.SplitHostPort(a.ln.Addr().String()); h != "127.0.0.2" || gossipHost != "127.0.0.2" {
		t.Fatalf("link listens on %s, gossip on %s; want 127.0.0.2", a.ln.Addr(), a.gossipAddr())
	}
	for what, port := range map[string]string{"link": linkPort, "gossip": gossipPort} {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", port), time.Second); err == nil {
			c.Close()
			t.Errorf("%s port %s reachable on 127.0.0.1", what, port)
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.2", port), time.Second)
		if err != nil {
			t.Errorf("%s port on 127.0.0.2: %v", what, err)
			continue
		}
		c.Close()
	}
	// n0 dials n1 (127.0.0.1): from 127.0.0.2, the address n1 knows n0 by.
	b := startNode(t, "n1", nil, a.gossipAddr())
	waitConnected(t, []tnode{a, b})
	b.mu.RLock()
	remote := b.links["n0"].conn.RemoteAddr().String()
	b.mu.RUnlock()
	if h, _, _ := net.SplitHostPort(remote); h != "127.0.0.2" {
		t.Fatalf("n0's link reached n1 from %s, want 127.0.0.2", remote)
	}
}
