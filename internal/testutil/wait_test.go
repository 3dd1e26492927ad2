package testutil

import (
	"net"
	"strconv"
	"testing"
	"time"
)

func TestPollReturnsWhenTheConditionHolds(t *testing.T) {
	calls := 0
	start := time.Now()
	if !Poll(5*time.Second, func() bool { calls++; return calls == 3 }) {
		t.Fatal("Poll = false for a condition that became true")
	}
	if calls != 3 {
		t.Fatalf("cond called %d times, want 3 (no call after it held)", calls)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("three polls took %v", d)
	}
}

func TestPollGivesUpAfterTheTimeout(t *testing.T) {
	start := time.Now()
	if Poll(100*time.Millisecond, func() bool { return false }) {
		t.Fatal("Poll = true for a condition that never held")
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Fatalf("Poll returned after %v, want about 100ms", d)
	}
}

func TestWaitForReportsTheTimeItTook(t *testing.T) {
	ready := time.Now().Add(50 * time.Millisecond)
	took := WaitFor(t, 5*time.Second, "the clock", func() bool { return time.Now().After(ready) })
	if took < 50*time.Millisecond || took > 2*time.Second {
		t.Fatalf("WaitFor took %v, want a little over 50ms", took)
	}
}

func TestFreeAddrIsFreeForTCPAndUDP(t *testing.T) {
	addr := FreeAddr(t)
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("FreeAddr = %q", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 {
		t.Fatalf("FreeAddr port %q", port)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen tcp on the free address: %v", err)
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("listen udp on the free address: %v", err)
	}
	u.Close()
}
