package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/testutil"
)

var otherKey = []byte("fedcba9876543210fedcba9876543210")

func mustLinkTLS(t testing.TB, key []byte) *linkTLS {
	t.Helper()
	if key == nil {
		return nil
	}
	lt, err := newLinkTLS(key)
	if err != nil {
		t.Fatal(err)
	}
	return lt
}

// TestLinkTLSDerivedCertificate: the certificate depends only on the key, so
// every node derives the same one; another key gives another public key.
func TestLinkTLSDerivedCertificate(t *testing.T) {
	a, b := mustLinkTLS(t, testKey), mustLinkTLS(t, testKey)
	if !bytes.Equal(a.der, b.der) || !a.pub.Equal(b.pub) {
		t.Fatal("two derivations from the same key differ")
	}
	cert, err := x509.ParseCertificate(a.der)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != linkCertName || cert.PublicKeyAlgorithm != x509.Ed25519 ||
		cert.NotBefore.Year() != 2000 || cert.NotAfter.Year() != 2100 {
		t.Fatalf("certificate: CN %q, %v, %v..%v", cert.Subject.CommonName, cert.PublicKeyAlgorithm, cert.NotBefore, cert.NotAfter)
	}
	if err := a.verifyPeer([][]byte{b.der}, nil); err != nil {
		t.Fatalf("same key refused: %v", err)
	}
	o := mustLinkTLS(t, otherKey)
	if o.pub.Equal(a.pub) {
		t.Fatal("another key derived the same link key")
	}
	if err := a.verifyPeer([][]byte{o.der}, nil); !errors.Is(err, ErrAuth) {
		t.Fatalf("other key's certificate: %v, want ErrAuth", err)
	}
	for _, k := range [][]byte{testKey[:16], testKey[:24]} {
		if _, err := newLinkTLS(k); err != nil {
			t.Fatalf("%d-byte key: %v", len(k), err)
		}
	}
}

type handshakeResult struct {
	dial, acc       net.Conn // the link connections (nil on error)
	dialErr, accErr error
}

// linkHandshake connects to ln and runs dialLink and acceptLink on the two
// ends; it closes the raw connections of a failed side as the cluster does.
func linkHandshake(tb testing.TB, ln net.Listener, dialKey, accKey []byte, dialLT, accLT *linkTLS) handshakeResult {
	tb.Helper()
	type accepted struct {
		conn net.Conn
		err  error
	}
	ach := make(chan accepted, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			ach <- accepted{nil, err}
			return
		}
		c, _, err := acceptLink(context.Background(), raw, accLT, accKey, "acc", nil)
		if err != nil {
			_ = raw.Close()
		}
		ach <- accepted{c, err}
	}()
	var r handshakeResult
	raw, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	r.dial, r.dialErr = dialLink(context.Background(), raw, dialLT, dialKey, "dial", "acc")
	if r.dialErr != nil {
		_ = raw.Close()
	}
	select {
	case a := <-ach:
		r.acc, r.accErr = a.conn, a.err
	case <-time.After(2 * handshakeTimeout):
		tb.Fatal("acceptor hung")
	}
	return r
}

func (r handshakeResult) close() {
	for _, c := range []net.Conn{r.dial, r.acc} {
		if c != nil {
			_ = c.Close()
		}
	}
}

func loopbackListener(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// TestLinkHandshakeTLS: TLS then HMAC on real TCP connections, with every
// combination of keys.
func TestLinkHandshakeTLS(t *testing.T) {
	ln := loopbackListener(t)
	for _, tc := range []struct {
		name           string
		dialKey, acc   []byte
		ok             bool
		dialAuth, accA bool // the side's error must be ErrAuth
	}{
		{"same key", testKey, testKey, true, false, false},
		{"no keys", nil, nil, true, false, false},
		{"other key", otherKey, testKey, false, true, true},
		{"dialer without key", nil, testKey, false, false, true},
		{"acceptor without key", testKey, nil, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := linkHandshake(t, ln, tc.dialKey, tc.acc, mustLinkTLS(t, tc.dialKey), mustLinkTLS(t, tc.acc))
			defer r.close()
			t.Logf("dial: %v; accept: %v", r.dialErr, r.accErr)
			if tc.ok {
				if r.dialErr != nil || r.accErr != nil {
					t.Fatalf("dial %v, accept %v", r.dialErr, r.accErr)
				}
				if tc.dialKey != nil {
					for _, c := range []net.Conn{r.dial, r.acc} {
						tc, ok := c.(tlsConn)
						if !ok || tc.ConnectionState().Version != tls.VersionTLS13 {
							t.Fatalf("link connection %T is not TLS 1.3", c)
						}
					}
				}
				// The link carries data both ways.
				if _, err := r.dial.Write([]byte("ping")); err != nil { // fits the socket buffer
					t.Fatal(err)
				}
				buf := make([]byte, 4)
				_ = r.acc.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := io.ReadFull(r.acc, buf); err != nil || string(buf) != "ping" {
					t.Fatalf("read %q: %v", buf, err)
				}
				return
			}
			if r.dialErr == nil || r.accErr == nil {
				t.Fatalf("want refusal on both sides: dial %v, accept %v", r.dialErr, r.accErr)
			}
			if tc.dialAuth && !errors.Is(r.dialErr, ErrAuth) {
				t.Errorf("dial error %v, want ErrAuth", r.dialErr)
			}
			if tc.accA && !errors.Is(r.accErr, ErrAuth) {
				t.Errorf("accept error %v, want ErrAuth", r.accErr)
			}
		})
	}
}

// relay is a TCP proxy that records the bytes it forwards.
type relay struct {
	ln    net.Listener
	ready chan struct{} // closed by setTarget
	done  chan struct{} // closed by close
	wg    sync.WaitGroup

	mu     sync.Mutex
	target string
	conns  []net.Conn
	closed bool
	up     bytes.Buffer // dialer -> target
	down   bytes.Buffer // target -> dialer
}

// startRelay listens on loopback; connections wait (bounded) for
// setTarget. It is closed and its goroutines are waited for in t.Cleanup.
func startRelay(t *testing.T) *relay {
	t.Helper()
	r := &relay{ln: loopbackListener(t), ready: make(chan struct{}), done: make(chan struct{})}
	r.wg.Go(r.acceptLoop)
	t.Cleanup(r.close)
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) setTarget(addr string) {
	r.mu.Lock()
	r.target = addr
	r.mu.Unlock()
	close(r.ready)
}

// track registers c for close; false once the relay is closed.
func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns = append(r.conns, c)
	return true
}

func (r *relay) close() {
	r.mu.Lock()
	r.closed = true
	conns := r.conns
	r.mu.Unlock()
	close(r.done)
	_ = r.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	r.wg.Wait()
}

func (r *relay) acceptLoop() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return // closed
		}
		if !r.track(c) {
			_ = c.Close()
			return
		}
		r.wg.Go(func() { r.serve(c) })
	}
}

func (r *relay) serve(in net.Conn) {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-r.ready:
	case <-r.done:
		return
	case <-t.C:
		_ = in.Close()
		return
	}
	r.mu.Lock()
	target := r.target
	r.mu.Unlock()
	out, err := net.DialTimeout("tcp", target, time.Second)
	if err != nil {
		_ = in.Close()
		return
	}
	if !r.track(out) {
		_ = out.Close()
		return
	}
	r.wg.Go(func() { r.pipe(in, out, &r.up) })
	r.wg.Go(func() { r.pipe(out, in, &r.down) })
}

// pipe copies src to dst, recording every chunk before forwarding it.
func (r *relay) pipe(src, dst net.Conn, rec *bytes.Buffer) {
	defer func() { _ = src.Close(); _ = dst.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			rec.Write(buf[:n])
			r.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (r *relay) captured() (up, down []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.up.Bytes()), bytes.Clone(r.down.Bytes())
}

// relayedPair starts n0 and n1 (key as given) so that n0's link to n1 goes
// through a recording relay, exchanges directory entries both ways and
// routes a stanza n0 -> n1. It returns the secrets that crossed the link
// and the captured bytes.
func relayedPair(t *testing.T, key []byte) (secrets []string, up, down []byte) {
	r := startRelay(t)
	setKey := func(c *Config) { c.SecretKey, c.Insecure = key, key == nil } // keyless: the plain-text control
	a := startNode(t, "n0", setKey)
	start := time.Now()
	// n0 < n1: n0 dials the link address n1 advertises, the relay's.
	b := startNode(t, "n1", func(c *Config) { setKey(c); c.Meta.Link = r.addr() }, a.gossipAddr())
	r.setTarget(b.ln.Addr().String())
	waitConnected(t, []tnode{a, b})
	t.Logf("key=%v: n1 joined and linked in %v", key != nil, time.Since(start))
	a.mu.RLock()
	remote := a.links["n1"].conn.RemoteAddr().String()
	a.mu.RUnlock()
	if remote != r.addr() {
		t.Fatalf("n0's link to n1 goes to %s, not through the relay %s", remote, r.addr())
	}

	marker := "marker-" + rand.Text()
	jidA := "alice-" + strings.ToLower(rand.Text()) + "@x/r" // n0's session, sent n0 -> n1
	jidB := "bob-" + strings.ToLower(rand.Text()) + "@x/r"   // n1's session, sent n1 -> n0
	a.UpsertLocal(Session{JID: jidA, Available: true, Status: marker})
	b.UpsertLocal(Session{JID: jidB, Available: true})
	testutil.WaitFor(t, 5*time.Second, "directory entries across the relay", func() bool {
		_, okA := b.LookupFull(jidA)
		_, okB := a.LookupFull(jidB)
		return okA && okB
	})
	stanza := []byte("<message to='" + jidB + "'><body>" + marker + "</body></message>")
	if err := a.Route("n1", jidB, stanza); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "stanza across the relay", func() bool {
		b.h.mu.Lock()
		defer b.h.mu.Unlock()
		return bytes.Equal(b.h.stanzas[jidB], stanza)
	})
	up, down = r.captured()
	t.Logf("key=%v: captured %d bytes n0->n1, %d bytes n1->n0", key != nil, len(up), len(down))
	return []string{marker, jidA, jidB}, up, down
}

// TestLinkTLSEncryptedOnWire: with a key, nothing routed or published is
// visible on the wire, which carries TLS records; without a key (control)
// the same secrets are in the clear, so the capture does see the link.
func TestLinkTLSEncryptedOnWire(t *testing.T) {
	t.Run("tls", func(t *testing.T) {
		secrets, up, down := relayedPair(t, testKey)
		for dir, b := range map[string][]byte{"n0->n1": up, "n1->n0": down} {
			if len(b) < 2 || b[0] != 0x16 || b[1] != 0x03 {
				t.Fatalf("%s: capture of %d bytes does not start with a TLS handshake record: % x", dir, len(b), b[:min(len(b), 8)])
			}
			for _, s := range secrets {
				if bytes.Contains(b, []byte(s)) {
					t.Errorf("%s: %q is in the clear on the wire", dir, s)
				}
			}
		}
	})
	t.Run("plain control", func(t *testing.T) {
		secrets, up, down := relayedPair(t, nil)
		all := append(up, down...)
		for _, s := range secrets {
			if !bytes.Contains(all, []byte(s)) {
				t.Errorf("without a key %q should be visible on the wire", s)
			}
		}
		if bytes.HasPrefix(up, []byte{0x16, 0x03}) {
			t.Error("plain link starts with a TLS record")
		}
	})
}

// TestLinkTLSOtherKeyNeverLinks: two members that share gossip but whose
// link certificates come from different keys never get a link, and both
// log why with the peer's address.
func TestLinkTLSOtherKeyNeverLinks(t *testing.T) {
	var logA, logB testutil.SyncBuffer
	logTo := func(w io.Writer) func(*Config) {
		return func(c *Config) {
			c.Logger = zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), w)).Level(zerolog.InfoLevel)
		}
	}
	a := startNode(t, "n0", logTo(&logA))
	b := startNodeHook(t, "n1", logTo(&logB), func(c *Cluster) { c.linkTLS = mustLinkTLS(t, otherKey) }, a.gossipAddr())
	testutil.WaitFor(t, 5*time.Second, "membership", func() bool { return len(a.Nodes()) == 2 && len(b.Nodes()) == 2 })
	testutil.WaitFor(t, 5*time.Second, "refusals logged", func() bool {
		return strings.Contains(logA.String(), "not derived from this node's secret key") &&
			strings.Contains(logB.String(), "link refused")
	})
	deadline := time.Now().Add(time.Second) // several dial attempts
	for time.Now().Before(deadline) {
		if a.linkCount() != 0 || b.linkCount() != 0 {
			t.Fatal("nodes with different link keys linked up")
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	if err := a.Route("n1", "x@y/r", []byte("<m/>")); !errors.Is(err, ErrLinkDown) {
		t.Fatalf("Route without a link: %v, want ErrLinkDown", err)
	}
	bLink := b.ln.Addr().String()
	if !strings.Contains(logA.String(), bLink) {
		t.Errorf("n0's warning does not name n1's address %s", bLink)
	}
	if !strings.Contains(logB.String(), `"remote":"127.0.0.1:`) {
		t.Error("n1's warning does not name the remote address")
	}
}

// BenchmarkLinkHandshake measures a link handshake on loopback TCP: TLS 1.3
// plus HMAC with a key, HMAC alone without.
func BenchmarkLinkHandshake(b *testing.B) {
	for _, bc := range []struct {
		name string
		key  []byte
	}{{"tls", testKey}, {"plain", nil}} {
		b.Run(bc.name, func(b *testing.B) {
			ln := loopbackListener(b)
			lt := mustLinkTLS(b, bc.key)
			for b.Loop() {
				r := linkHandshake(b, ln, bc.key, bc.key, lt, lt)
				if r.dialErr != nil || r.accErr != nil {
					b.Fatalf("dial %v, accept %v", r.dialErr, r.accErr)
				}
				r.close()
			}
		})
	}
}
