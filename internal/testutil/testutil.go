// Package testutil holds small helpers that tests in several packages
// share: the one poll loop (Poll, WaitFor), free ports (FreePort,
// FreeAddr) and SyncBuffer. It is imported by tests and by test-support
// packages (storage/storetest, internal/pgtest, internal/testnode) only, and imports nothing
// from the module, so the tests of any package, even the lowest tier, may
// use it.
package testutil

import (
	"bytes"
	"sync"
)

// SyncBuffer is a bytes.Buffer that one goroutine may write (a logger, a
// child process) while another reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
