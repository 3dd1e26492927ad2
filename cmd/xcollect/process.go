package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync/atomic"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/clients/processor"
)

const processHelp = `xcollect process — run a processor: receive the reports sent to a component

  xcollect process --addr 127.0.0.1:5347 --jid collector.example.com --secret S [--exec CMD] [--presence]

Each message and IQ addressed to the component is written to stdout as one
JSON line {"from","id","stanza"} and acknowledged once written. Presence
stanzas (users coming online and going offline, for a component with
receive_presence) are acknowledged without output unless --presence is
given; the first one skipped is mentioned on stderr. With --exec, CMD
runs (sh -c CMD) once per report with that JSON line on its stdin and
XCOLLECT_FROM and XCOLLECT_ID in its environment; the report is
acknowledged only when CMD exits 0. Otherwise the connection is closed and
the node delivers the report again after a reconnect (at-least-once: make
CMD idempotent on from+id). The secret may also come from
XCOLLECT_COMPONENT_SECRET. Runs until interrupted.`

// reportLine is the JSON line of one report.
type reportLine struct {
	From   string `json:"from"`
	ID     string `json:"id"`
	Stanza string `json:"stanza"`
}

func cmdProcess(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("process", processHelp, stderr)
	addr := fs.String("addr", "127.0.0.1:5347", "component listener address (host:port) of a node")
	jidF := fs.String("jid", "", "component JID as configured on the node, e.g. collector.example.com (required)")
	secret := fs.String("secret", "", "component secret (default: env XCOLLECT_COMPONENT_SECRET)")
	execCmd := fs.String("exec", "", "run this shell command per report, JSON line on stdin; ack on exit 0")
	execTimeout := fs.Duration("exec-timeout", 5*time.Minute, "kill --exec CMD after this long (counts as a failure)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error (logs go to stderr)")
	withPresence := fs.Bool("presence", false, "also handle presence stanzas (default: ack them without output)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *secret == "" {
		*secret = os.Getenv("XCOLLECT_COMPONENT_SECRET")
	}
	if err := required(fs, stderr, map[string]string{"jid": *jidF, "secret": *secret}); err != nil {
		return err
	}
	lvl, err := zerolog.ParseLevel(*logLevel)
	if err != nil || *logLevel == "" {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", *logLevel)
	}
	log := withTime(zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05.000", NoColor: !isTerminal(stderr)}).Level(lvl))
	var skipped atomic.Bool
	handle := func(ctx context.Context, r processor.Report) error {
		if r.Name == "presence" && !*withPresence {
			if skipped.CompareAndSwap(false, true) {
				log.Info().Str("from", r.From).Msg("presence stanzas are acknowledged without output; pass --presence to print them")
			}
			return nil
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false) // keep the stanza readable: <message …>, not \u003cmessage
		if err := enc.Encode(reportLine{From: r.From, ID: r.ID, Stanza: string(r.Stanza)}); err != nil {
			return err
		}
		line := buf.Bytes() // one line, newline included
		if *execCmd == "" {
			if _, err := stdout.Write(line); err != nil {
				return fmt.Errorf("write report %s to stdout: %w", r.ID, err)
			}
			return nil
		}
		cctx, cancel := context.WithTimeout(ctx, *execTimeout)
		defer cancel()
		cmd := exec.CommandContext(cctx, "sh", "-c", *execCmd)
		cmd.Stdin = bytes.NewReader(line)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		cmd.Env = append(os.Environ(), "XCOLLECT_FROM="+r.From, "XCOLLECT_ID="+r.ID)
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("--exec %q for report %s: %w (not acked: the node delivers it again)", *execCmd, r.ID, err)
		}
		return nil
	}
	p, err := processor.New(processor.Config{Addr: *addr, JID: *jidF, Secret: *secret, Handler: handle, Logger: log})
	if err != nil {
		return err
	}
	if err := p.Run(ctx); err != nil {
		return explainClientErr(err, *addr, "--jid and --secret")
	}
	return nil
}

// isTerminal reports whether w is a terminal (colored logs only there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}
