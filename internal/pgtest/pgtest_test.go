package pgtest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"xcollect.dev/xcollect/internal/pgtest"
)

func query(t *testing.T, dsn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(ctx) //nolint:errcheck // test connection
	var s string
	if err := c.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestStartStopRestart(t *testing.T) {
	s := pgtest.Start(t)
	if got := query(t, s.DSN(), "SHOW fsync"); got != "off" {
		t.Errorf("fsync = %q in fast mode, want off", got)
	}
	dsn := s.CreateDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE k(v text); INSERT INTO k VALUES ('kept')"); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	port := s.Port()
	if err := s.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if s.Running() {
		t.Fatal("running after Stop")
	}
	if _, err := pgx.Connect(ctx, dsn); err == nil {
		t.Fatal("connected to a stopped server")
	}
	if err := s.Start(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if s.Port() != port {
		t.Fatalf("port changed %d -> %d", port, s.Port())
	}
	if got := query(t, dsn, "SELECT v FROM k"); got != "kept" {
		t.Fatalf("after restart got %q", got)
	}
}

func TestDurableAndCleanup(t *testing.T) {
	var dir string
	t.Run("run", func(t *testing.T) {
		s := pgtest.StartOptions(t, pgtest.Options{Durable: true})
		dir = s.Dir()
		if got := query(t, s.DSN(), "SHOW fsync"); got != "on" {
			t.Errorf("fsync = %q in durable mode, want on", got)
		}
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("dir %s left behind: %v", dir, err)
	}
}
