package cluster

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"xcollect.dev/xcollect/internal/testutil"
)

// testDNS is a tiny authoritative DNS server on 127.0.0.1 (UDP): it answers
// A queries for one name with fixed addresses, NODATA for other types of
// that name and NXDOMAIN for every other name.
type testDNS struct {
	addr    string // host:port the server listens on
	name    string // rooted, e.g. "seeds.xcollect.test."
	a       []netip.Addr
	queries atomic.Int64 // every parsed query
	hits    atomic.Int64 // A queries for name
}

// startTestDNS starts the server; it stops (and its goroutine is waited
// for) when the test ends.
func startTestDNS(t *testing.T, name string, a ...netip.Addr) *testDNS {
	t.Helper()
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(t.Context(), "udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("DNS listener: %v", err)
	}
	d := &testDNS{addr: pc.LocalAddr().String(), name: name, a: a}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.serve(t, pc)
	}()
	t.Cleanup(func() {
		_ = pc.Close() // ends serve's ReadFrom
		wg.Wait()
	})
	return d
}

func (d *testDNS) serve(t *testing.T, pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("DNS server read: %v", err)
			}
			return
		}
		resp, err := d.answer(buf[:n])
		if err != nil {
			t.Logf("DNS server: dropped malformed query: %v", err)
			continue
		}
		if _, err := pc.WriteTo(resp, from); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("DNS server write: %v", err)
		}
	}
}

func (d *testDNS) answer(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	qh, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	d.queries.Add(1)
	known := strings.EqualFold(q.Name.String(), d.name)
	rh := dnsmessage.Header{
		ID:               qh.ID,
		Response:         true,
		OpCode:           qh.OpCode,
		Authoritative:    true,
		RecursionDesired: qh.RecursionDesired,
		RCode:            dnsmessage.RCodeSuccess,
	}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if known && q.Type == dnsmessage.TypeA && q.Class == dnsmessage.ClassINET {
		d.hits.Add(1)
		for _, a := range d.a {
			rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 0}
			if err := b.AResource(rr, dnsmessage.AResource{A: a.As4()}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

// resolver returns a pure-Go resolver that sends every query to d.
func (d *testDNS) resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "udp", d.addr)
		},
	}
}

// needLoopback fails the test unless every address can be bound (Linux
// routes all of 127/8 to lo; macOS has only 127.0.0.1 by default), with
// the command that fixes it: never a silent skip.
func needLoopback(t *testing.T, addrs ...string) {
	t.Helper()
	var lc net.ListenConfig
	for _, a := range addrs {
		pc, err := lc.ListenPacket(t.Context(), "udp", net.JoinHostPort(a, "0"))
		if err != nil {
			t.Fatalf("loopback address %s not bindable: %v (on macOS: sudo ifconfig lo0 alias %s up)", a, err, a)
		}
		_ = pc.Close() // probe only
	}
}

// TestJoinByDNS joins a node that knows only a DNS name. JoinDNS pairs every
// resolved address with the joiner's own BindPort, so all nodes share one
// gossip port and each needs its own loopback address: seeds on 127.0.0.1
// and 127.0.0.3, the joiner on 127.0.0.2.
func TestJoinByDNS(t *testing.T) {
	needLoopback(t, "127.0.0.2", "127.0.0.3")
	const name = "seeds.xcollect.test."

	n0 := startNode(t, "n0", nil) // 127.0.0.1, free port
	port := int(n0.memberlist().LocalNode().Port)
	n1 := startNode(t, "n1", func(c *Config) {
		c.BindAddr = "127.0.0.3"
		c.BindPort = port
	}, n0.gossipAddr())
	waitConnected(t, []tnode{n0, n1})

	dns := startTestDNS(t, name, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.3"))
	joinCfg := func(c *Config) {
		c.BindAddr = "127.0.0.2"
		c.BindPort = port
		c.Join = nil
		c.JoinDNS = name
		c.Resolver = dns.resolver()
	}

	// The seeds as the joiner will compute them.
	cfg := DefaultLocalConfig()
	joinCfg(&cfg)
	seeds, err := cfg.seedAddrs(t.Context())
	if err != nil {
		t.Fatalf("seedAddrs: %v", err)
	}
	p := strconv.Itoa(port)
	want := []string{net.JoinHostPort("127.0.0.1", p), net.JoinHostPort("127.0.0.3", p)}
	slices.Sort(seeds)
	if !slices.Equal(seeds, want) {
		t.Fatalf("seedAddrs = %v, want %v", seeds, want)
	}

	before := dns.hits.Load()
	start := time.Now()
	n2 := startNode(t, "n2", joinCfg)
	took := testutil.WaitFor(t, 5*time.Second, "joiner by DNS sees the seeds and they see it", func() bool {
		for _, n := range []tnode{n0, n1, n2} {
			if len(n.Nodes()) != 3 || n.linkCount() != 2 {
				return false
			}
		}
		return true
	})
	if dns.hits.Load() == before {
		t.Fatalf("joiner reached full membership but the DNS server saw no A query for %s", name)
	}
	t.Logf("joined by DNS (%d queries, %d for A %s) in %v (membership %v after Start)",
		dns.queries.Load(), dns.hits.Load(), name, time.Since(start), took)
}

// TestJoinDNSNameNotFound: a JoinDNS name that does not exist is an error
// naming it, and it came from our DNS server (NXDOMAIN), not the network.
func TestJoinDNSNameNotFound(t *testing.T) {
	dns := startTestDNS(t, "seeds.xcollect.test.", netip.MustParseAddr("127.0.0.1"))
	const missing = "nope.xcollect.test."
	cfg := Config{JoinDNS: missing, BindPort: DefaultBindPort, Resolver: dns.resolver()}

	seeds, err := cfg.seedAddrs(t.Context())
	if err == nil {
		t.Fatalf("seedAddrs(%s) = %v, want an error", missing, seeds)
	}
	if len(seeds) != 0 {
		t.Errorf("seedAddrs returned seeds %v with the error", seeds)
	}
	if !strings.Contains(err.Error(), "cluster: resolve join name "+missing) {
		t.Errorf("error %q does not name the DNS name %s", err, missing)
	}
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("error %q: want a *net.DNSError with IsNotFound", err)
	}
	if dns.queries.Load() == 0 {
		t.Error("the DNS server saw no query")
	}
	t.Logf("error: %v", err)
}
