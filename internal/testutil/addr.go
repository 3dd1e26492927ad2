package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
)

// FreePort returns a port on host that is free for TCP and for UDP right
// now (a cluster node binds memberlist's TCP and UDP on the same port).
//
// It picks below the kernel's ephemeral range: a port the kernel handed
// out for listen(":0") and that the test frees again comes from the same
// range as the source ports of outgoing connections, and the parallel test
// packages make many; one of them can take it before the node binds it
// ("address already in use", seen in clustertest). It tries a few ports
// before it gives up.
func FreePort(host string) (int, error) {
	low := ephemeralLow()
	for range 50 {
		port := 10000 + rand.IntN(max(low-10000, 1))
		if portFree(host, port) {
			return port, nil
		}
	}
	return 0, fmt.Errorf("free port on %s: no port below %d free for both TCP and UDP in 50 tries", host, low)
}

// portFree reports whether port is free on host for TCP and UDP now.
func portFree(host string, port int) bool {
	addr := net.JoinHostPort(host, fmt.Sprint(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	if l.Close() != nil {
		return false
	}
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	return u.Close() == nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux;
// 32768 where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var low, high int
	if _, err := fmt.Sscan(string(b), &low, &high); err != nil || low <= 10000 {
		return 32768
	}
	return low
}

// FreeAddr returns 127.0.0.1:port with a port free right now; it fails the
// test when there is none.
func FreeAddr(t testing.TB) string {
	t.Helper()
	port, err := FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
}
