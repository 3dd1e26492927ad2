package testutil

import (
	"testing"
	"time"
)

// Poll calls cond until it returns true or timeout has passed, and reports
// whether it did. It polls often at first (every 5 ms) and less often the
// longer it waits (up to every 50 ms), so a short wait is measured closely
// and a long one costs little CPU. It is the one poll loop of the module's
// tests; WaitFor is Poll that fails the test.
func Poll(timeout time.Duration, cond func() bool) bool {
	const (
		firstInterval = 5 * time.Millisecond
		maxInterval   = 50 * time.Millisecond
	)
	deadline := time.Now().Add(timeout)
	interval := firstInterval
	for {
		if cond() {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(min(interval, max(time.Until(deadline), time.Millisecond))) // poll interval, not synchronisation
		interval = min(interval*3/2, maxInterval)
	}
}

// WaitFor polls cond (as Poll does) until it holds and returns how long
// that took; after timeout it fails the test, naming what it waited for.
// Call it from the test's goroutine.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
	return time.Since(start)
}
