// Package connlimit counts the live connections of a listener, in total
// and per remote address, so that one address cannot take them all. It
// only counts: the listener writes the stream error the Refusal names.
package connlimit

import (
	"net"
	"sync"
)

// Refusal says why a connection was refused, as an RFC 6120 stream error.
type Refusal struct {
	Condition string // "policy-violation" or "resource-constraint"
	Text      string
}

// Limiter admits at most Max connections, and PerAddr of one address
// (0 = no limit for either). Its table holds only addresses with live
// connections, so it is bounded by Max. The zero value admits everything.
type Limiter struct {
	mu      sync.Mutex
	max     int
	perAddr int
	total   int
	byAddr  map[string]int
}

// New returns a limiter for max connections in total and perAddr per
// remote address.
func New(max, perAddr int) *Limiter {
	return &Limiter{max: max, perAddr: perAddr, byAddr: make(map[string]int)}
}

// Acquire admits a connection from ip, or tells why not. An admitted
// connection must be released once with Release(ip).
func (l *Limiter) Acquire(ip string) (Refusal, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.max > 0 && l.total >= l.max:
		// RFC 6120 §4.9.3.17: the server lacks the resources.
		return Refusal{"resource-constraint", "the server has too many connections; try again later"}, false
	case l.perAddr > 0 && l.byAddr[ip] >= l.perAddr:
		// RFC 6120 §4.9.3.15: a local service policy.
		return Refusal{"policy-violation", "too many connections from your address"}, false
	}
	l.total++
	if l.byAddr == nil {
		l.byAddr = make(map[string]int)
	}
	l.byAddr[ip]++
	return Refusal{}, true
}

// Release ends a connection that Acquire admitted.
func (l *Limiter) Release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byAddr[ip]--; l.byAddr[ip] <= 0 {
		delete(l.byAddr, ip)
	}
}

// Live returns the connections admitted and not released.
func (l *Limiter) Live() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// IP returns the host part of a connection's remote address.
func IP(c net.Conn) string {
	a := c.RemoteAddr()
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
