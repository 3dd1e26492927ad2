package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrationLock is the pg_advisory_lock key that serialises migrations of
// nodes starting at once ("xcollect" in ASCII).
const migrationLock int64 = 0x78636f6c6c656374

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations NNN_name.sql sorted by version.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNN_name.sql", e.Name())
		}
		b, err := migrationFS.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share a version", ms[i-1].name, ms[i].name)
		}
	}
	return ms, nil
}

// Migrate brings the schema of the database at dsn up to date. It is safe
// to run from several nodes at once: a session advisory lock serialises
// them, and each migration commits with its version row.
func Migrate(ctx context.Context, dsn string) error {
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("postgres: migrate: parse DSN: %w", err)
	}
	return migrateConfig(ctx, cc, zerolog.Nop())
}

func migrateConfig(ctx context.Context, cc *pgx.ConnConfig, log zerolog.Logger) error {
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("postgres: migrate: connect: %w", err)
	}
	// Closing the session also releases the advisory lock.
	defer conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck // nothing to do about a failed close
	if err := migrate(ctx, conn, log); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	return nil
}

func migrate(ctx context.Context, conn *pgx.Conn, log zerolog.Logger) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return fmt.Errorf("advisory lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLock) //nolint:errcheck // the lock also ends with the session
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("schema_migrations: %w", err)
	}
	applied := map[int]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return fmt.Errorf("read versions: %w", err)
	}
	maxApplied := 0
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return err
		}
		applied[v] = true
		maxApplied = max(maxApplied, v)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read versions: %w", err)
	}
	if n := len(ms); n > 0 && maxApplied > ms[n-1].version {
		log.Warn().Int("db_version", maxApplied).Int("binary_version", ms[n-1].version).
			Msg("postgres schema is newer than this binary; running anyway")
	}
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		log.Info().Str("migration", m.name).Msg("postgres schema migrated")
	}
	return nil
}
