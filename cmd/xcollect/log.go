package main

import (
	"fmt"
	"io"
	"os"

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
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("node", f.Node.Name).Logger(), nil
}
