package main

import (
	"context"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/certs"
	"xcollect.dev/xcollect/internal/config"
)

// watchHangup reloads on SIGHUP until ctx ends: the TLS certificate (new
// handshakes get the new one; sessions keep their connections), and it
// reads the configuration again to say whether the components changed,
// which still needs a restart. The returned channel closes when the
// watcher has stopped.
func watchHangup(ctx context.Context, cert *certs.Reloadable, load func() (config.File, error), components []string, log zerolog.Logger) <-chan struct{} {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() { // owned by cmdServe through done
		defer close(done)
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			if err := cert.Reload(); err != nil {
				log.Error().Err(err).Msg("SIGHUP: TLS certificate not reloaded; the current one stays")
			} else {
				ev := log.Info()
				if c := cert.Current(); c != nil && c.Leaf != nil {
					ev = ev.Str("subject", c.Leaf.Subject.String()).Time("not_after", c.Leaf.NotAfter)
				}
				ev.Msg("SIGHUP: TLS certificate reloaded (new connections use it)")
			}
			f, err := load()
			if err != nil {
				log.Error().Err(err).Msg("SIGHUP: configuration not readable")
				continue
			}
			var now []string
			for _, c := range f.Components {
				now = append(now, c.JID)
			}
			slices.Sort(now)
			if !slices.Equal(now, components) {
				log.Warn().Strs("running", components).Strs("in_file", now).
					Msg("SIGHUP: the components in the configuration changed; restart the node to apply them (not reloaded live yet)")
			}
		}
	}()
	return done
}
