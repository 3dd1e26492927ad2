package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/config"
	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/embedded"
	"xcollect.dev/xcollect/storage/postgres"
)

// openStore opens Postgres when a DSN is configured, else the embedded
// store.
func openStore(ctx context.Context, f config.File, log zerolog.Logger) (storage.Store, string, error) {
	if f.Storage.Postgres.DSN != "" {
		pg := f.Storage.Postgres
		s, err := postgres.Open(ctx, postgres.Config{
			DSN: pg.DSN, MaxConns: pg.MaxConns, ConnectTimeout: pg.ConnectTimeout,
			StartupTimeout: pg.StartupTimeout, Logger: log,
		})
		if err != nil {
			return nil, "", fmt.Errorf("open postgres store: %w", err)
		}
		return s, "postgres", nil
	}
	path := f.Storage.Embedded.Path
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, "", fmt.Errorf("create data directory: %w", err)
	}
	s, err := embedded.Open(path, embedded.Options{Logger: log})
	if err != nil {
		return nil, "", fmt.Errorf("open embedded store %s: %w (is another xcollect using it? stop it or set --data-dir)", path, err)
	}
	return s, "embedded:" + path, nil
}
