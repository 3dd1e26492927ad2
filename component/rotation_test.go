package component_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/wire"
)

// handshakeFrom runs one XEP-0114 handshake for compA from the loopback
// address ip with secret and returns what the node answered after it: the
// handshake element or its stream error, up to the close.
func handshakeFrom(t *testing.T, addr, ip, guess string) string {
	t.Helper()
	d := net.Dialer{Timeout: wait, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(2 * wait))
	fmt.Fprintf(nc, "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='%s'>", compA)
	r := bufio.NewReader(nc)
	h, err := wire.NewDecoder(r, 0).Header()
	if err != nil {
		return "header: " + err.Error()
	}
	sum := sha1.Sum([]byte(h.ID + guess))
	fmt.Fprintf(nc, "<handshake>%s</handshake>", hex.EncodeToString(sum[:]))
	// Read up to the handshake answer or the close: a right secret gets
	// <handshake/> and the stream stays open.
	var got []byte
	buf := make([]byte, 4096)
	for !strings.Contains(string(got), "<handshake") && !strings.Contains(string(got), "</stream:stream>") {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	return string(got)
}

// TestHandshakeGuessingFromManyAddresses: a guesser that gives every
// attempt its own source address is not slowed by the per-address penalty;
// the per-component one holds it to a few handshakes at a time, each
// waiting, and a right secret during the storm waits too.
func TestHandshakeGuessingFromManyAddresses(t *testing.T) {
	e := startEnv(t, envOpts{quiet: true, cfg: func(c *component.Config) {
		c.HandshakeMaxDelay = time.Second // a shorter test
		c.HandshakeComponentFreeFailures = 5
	}})
	const workers = 8
	run := 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	var answered, refused, next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && i < 2000; i++ { // bounded
				n := next.Add(1)
				ip := fmt.Sprintf("127.8.%d.%d", n/250, n%250+1) // a fresh address each time
				switch got := handshakeFrom(t, e.comp, ip, "guess"); {
				case strings.Contains(got, "not-authorized"):
					answered.Add(1)
				case strings.Contains(got, "policy-violation"):
					refused.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	n := answered.Load()
	t.Logf("%d workers, a new address per attempt, %v: %d wrong handshakes answered (%.1f/s), %d refused as too many at once",
		workers, run, n, float64(n)/run.Seconds(), refused.Load())
	// 5 free, then at most 4 at a time waiting 250ms, 500ms, 1s, 1s…
	if n > 40 {
		t.Fatalf("%d wrong handshakes answered in %v from rotating addresses; want at most 40", n, run)
	}
	// The real processor gets in (it may first be told to retry while the
	// storm's last handshakes still hold their slots), and its right secret
	// waits like a wrong one.
	deadline := time.Now().Add(10 * time.Second)
	for {
		start := time.Now()
		got := handshakeFrom(t, e.comp, "127.9.0.1", secret)
		took := time.Since(start)
		if strings.Contains(got, "<handshake") {
			if took < 200*time.Millisecond {
				t.Fatalf("right secret for a component in penalty answered in %v; want the penalty too", took)
			}
			break
		}
		if !strings.Contains(got, "policy-violation") || time.Now().After(deadline) {
			t.Fatalf("right secret during the storm: %q", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
