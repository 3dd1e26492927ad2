package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/config"
)

// newLogger builds the node's logger: human console output on a terminal,
// JSON lines otherwise (or as configured).
func newLogger(f config.File, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(f.Log.Level)
	if err != nil || f.Log.Level == "" {
		return zerolog.Logger{}, fmt.Errorf("log.level %q: use debug, info, warn or error", f.Log.Level)
	}
	console := f.Log.Format == "console"
	if f.Log.Format == "auto" {
		if file, ok := w.(*os.File); ok && isatty.IsTerminal(file.Fd()) {
			console = true
		}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return withTime(zerolog.New(w).Level(lvl).With().Str("node", f.Node.Name).Logger()), nil
}

// logTimeFormat is the time of every log line, to the millisecond.
const logTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// withTime stamps every event of l with the time in logTimeFormat.
// zerolog's own Timestamp() uses a package-wide format (whole seconds by
// default), which is why console lines ended in .000.
func withTime(l zerolog.Logger) zerolog.Logger {
	return l.Hook(zerolog.HookFunc(func(e *zerolog.Event, _ zerolog.Level, _ string) {
		e.Str(zerolog.TimestampFieldName, time.Now().Format(logTimeFormat))
	}))
}
