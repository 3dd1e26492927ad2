package xmppc

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"strings"
	"time"

	"xcollect.dev/xcollect/internal/wire"
)

// RandomID returns a random identifier (26 characters, base32, 130 bits).
func RandomID() string { return rand.Text() }

// Backoff is an exponential backoff with jitter: each Next doubles the
// base from Min up to Max and returns a random duration in [base/2, base].
// Not safe for concurrent use; its owner is one reconnect loop.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the next delay.
func (b *Backoff) Next() time.Duration {
	switch {
	case b.cur == 0:
		b.cur = b.Min
	default:
		b.cur *= 2
	}
	if b.cur > b.Max {
		b.cur = b.Max
	}
	if b.cur <= 1 {
		return b.cur
	}
	half := b.cur / 2
	return half + mrand.N(half+1)
}

// Reset starts the next sequence at Min again.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits d or until ctx ends; false when ctx ended.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Children returns the child elements of the element raw, each with its
// exact bytes.
func Children(raw []byte) ([]*wire.Element, error) {
	d := wire.NewDecoder(bytes.NewReader(raw), 0)
	if _, err := d.Header(); err != nil {
		return nil, err
	}
	var out []*wire.Element
	for {
		el, err := d.Next()
		if errors.Is(err, wire.ErrStreamEnd) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, el)
	}
}

// CheckElement reports whether b is exactly one well-formed XML element
// (surrounding whitespace allowed).
func CheckElement(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '<' {
		return errors.New("not an XML element")
	}
	el, err := wire.Parse(b)
	if err != nil {
		return fmt.Errorf("not one well-formed XML element: %w", err)
	}
	if len(el.Raw) != len(b) {
		return errors.New("more than one XML element (wrap them in one)")
	}
	return nil
}

// RedirectAddr turns the host of a see-other-host error into host:port; a
// bare host keeps the port of the configured address (RFC 6120 §4.9.3.19).
func RedirectAddr(host, configured string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	_, port, _ := net.SplitHostPort(configured) // callers check configured at construction
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}
