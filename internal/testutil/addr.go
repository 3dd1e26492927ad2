package testutil

import (
	"fmt"
	"net"
	"testing"
)

// FreePort returns a port on host that is free for TCP and for UDP right
// now (a cluster node binds memberlist's TCP and UDP on the same port). It
// tries a few ports before it gives up.
func FreePort(host string) (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, fmt.Errorf("free port on %s: %w", host, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			return 0, fmt.Errorf("free port on %s: %w", host, err)
		}
		if u, err := net.ListenPacket("udp", net.JoinHostPort(host, fmt.Sprint(port))); err == nil {
			if err := u.Close(); err != nil {
				return 0, fmt.Errorf("free port on %s: %w", host, err)
			}
			return port, nil
		}
	}
	return 0, fmt.Errorf("free port on %s: no port free for both TCP and UDP in 20 tries", host)
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
