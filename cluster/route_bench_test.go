package cluster

import "testing"

// BenchmarkRouteAckedRoundTrip: one acked stanza to the other node and its
// receipt back, one at a time, over a TLS link on loopback.
func BenchmarkRouteAckedRoundTrip(b *testing.B) {
	a := startCluster(b, 2, nil)[0]
	stanza := []byte("<message to='bob@example.com/r' id='m1' type='chat'><body>hello</body></message>")
	done := make(chan error, 1)
	b.ResetTimer()
	for range b.N {
		if err := a.RouteAcked("n1", "bob@example.com/r", stanza, func(err error) { done <- err }); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkControlAckedRoundTrip is the same for an acked control message.
func BenchmarkControlAckedRoundTrip(b *testing.B) {
	a := startCluster(b, 2, nil)[0]
	msg := []byte(`{"op":"out","id":"n0~abc","owner":"n0","epoch":1,"out":["PG1lc3NhZ2UvPg=="]}`)
	done := make(chan error, 1)
	b.ResetTimer()
	for range b.N {
		if err := a.SendControlAcked("n1", 4, msg, func(err error) { done <- err }); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}
