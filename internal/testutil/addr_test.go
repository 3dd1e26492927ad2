package testutil

import (
	"net"
	"testing"
)

// TestFreePortBelowEphemeralRange: the port is free for TCP and UDP and
// lies outside the range outgoing connections take their source ports
// from.
func TestFreePortBelowEphemeralRange(t *testing.T) {
	for range 20 {
		port, err := FreePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if port < 10000 || port >= ephemeralLow() {
			t.Fatalf("port %d outside [10000, %d)", port, ephemeralLow())
		}
		l, err := net.Listen("tcp", FreeAddr(t))
		if err != nil {
			t.Fatalf("FreeAddr gave a busy address: %v", err)
		}
		l.Close()
	}
}
