package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/postgres"
	"xcollect.dev/xcollect/storage/storetest"
)

// pg is the package's shared throw-away server (fast mode); each test gets
// its own database on it.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	pgtest.Main(m, pgtest.Options{}, func(s *pgtest.Server) { pg = s })
}

func testConfig(t testing.TB, dsn string) postgres.Config {
	return postgres.Config{
		DSN:            dsn,
		StartupTimeout: 10 * time.Second,
		Logger:         zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
	}
}

// open opens a store on dsn and closes it when t ends.
func open(t testing.TB, dsn string) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, testConfig(t, dsn))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestContract(t *testing.T) {
	dsns := map[storage.Store]string{}
	storetest.Run(t, storetest.Factory{
		Open: func(t *testing.T) storage.Store {
			dsn := pg.CreateDatabase(t)
			s := open(t, dsn)
			dsns[s] = dsn
			return s
		},
		Reopen: func(t *testing.T, s storage.Store) storage.Store {
			dsn, ok := dsns[s]
			if !ok {
				t.Fatal("Reopen of a store this factory did not open")
			}
			if err := s.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
				t.Fatalf("Close: %v", err)
			}
			s2 := open(t, dsn)
			dsns[s2] = dsn
			return s2
		},
	})
}
