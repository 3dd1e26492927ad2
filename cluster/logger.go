package cluster

import (
	"bytes"

	"github.com/rs/zerolog"
)

// mlLogWriter adapts memberlist's standard-library logger to zerolog. Each
// Write is one log line such as "[WARN] memberlist: Refuting a suspect
// message"; the bracketed prefix selects the level.
type mlLogWriter struct {
	log zerolog.Logger
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
