package cluster

import (
	"bytes"
	"sync"

	"github.com/rs/zerolog"
)

// mlLogWriter adapts memberlist's standard-library logger to zerolog. Each
// Write is one log line such as "[WARN] memberlist: Refuting a suspect
// message"; the bracketed prefix selects the level.
// After detach, lines are dropped: memberlist's goroutines outlive its
// Shutdown and must not log into a finished test or a closed sink.
type mlLogWriter struct {
	log zerolog.Logger

	mu       sync.RWMutex
	detached bool
}

// detach stops logging; when it returns no Write is in progress.
func (w *mlLogWriter) detach() {
	w.mu.Lock()
	w.detached = true
	w.mu.Unlock()
}

var mlLevels = []struct {
	prefix []byte
	level  zerolog.Level
}{
	{[]byte("[DEBUG]"), zerolog.DebugLevel},
	{[]byte("[INFO]"), zerolog.InfoLevel},
	{[]byte("[WARN]"), zerolog.WarnLevel},
	{[]byte("[ERR]"), zerolog.ErrorLevel},
	{[]byte("[ERROR]"), zerolog.ErrorLevel},
}

// Write implements io.Writer. It never fails.
func (w *mlLogWriter) Write(p []byte) (int, error) {
	n := len(p)
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.detached {
		return n, nil
	}
	line := bytes.TrimSpace(p)
	level := zerolog.InfoLevel
	for _, l := range mlLevels {
		if bytes.HasPrefix(line, l.prefix) {
			level = l.level
			line = bytes.TrimSpace(line[len(l.prefix):])
			break
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	w.log.WithLevel(level).Msg(string(line))
	return n, nil
}
