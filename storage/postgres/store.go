package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/storage"
)

// EnvDSN is the environment variable DSNFromEnv reads.
const EnvDSN = "XCOLLECT_POSTGRES_DSN"

// Defaults of Config.
const (
	DefaultMaxConns       = 8                // pool size; enqueue is grouped, so few connections suffice
	DefaultConnectTimeout = 5 * time.Second  // one connection attempt
	DefaultStartupTimeout = 30 * time.Second // how long Open waits for an unreachable database
)

// Config configures Open.
type Config struct {
	// DSN is a libpq URL or key=value string
	// ("postgres://xcollect@db:5432/xcollect?sslmode=verify-full").
	// Required. DSNFromEnv reads it from XCOLLECT_POSTGRES_DSN.
	DSN string
	// MaxConns is the pool size, not counting the LISTEN connection.
	// Default 8.
	MaxConns int32
	// ConnectTimeout bounds one connection attempt. Default 5s.
	ConnectTimeout time.Duration
	// StartupTimeout is how long Open retries a database that does not
	// answer (a node often starts before its database). Default 30s;
	// negative means a single attempt.
	StartupTimeout time.Duration
	// Logger receives lifecycle lines (waiting, migrated, listener lost and
	// back). Default: no logging.
	Logger zerolog.Logger
}

// DSNFromEnv returns the DSN in XCOLLECT_POSTGRES_DSN, or "" when unset.
// The caller decides precedence; the config file usually wins.
func DSNFromEnv() string { return os.Getenv(EnvDSN) }

func (c Config) withDefaults() Config {
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.StartupTimeout == 0 {
		c.StartupTimeout = DefaultStartupTimeout
	}
	return c
}

// PoolStat returns the connection pool's statistics (for the metrics).
func (s *Store) PoolStat() *pgxpool.Stat { return s.pool.Stat() }

// Store is the PostgreSQL implementation of storage.Store. It is safe for
// concurrent use. It owns a pgxpool.Pool and one goroutine that holds the
// LISTEN connection; Close stops both.
type Store struct {
	pool   *pgxpool.Pool
	log    zerolog.Logger
	closed atomic.Bool

	listener *listener

	pruneMu   sync.Mutex
	lastPrune map[string]time.Time // component -> last dedupe pruning
	pruning   sync.WaitGroup       // background prunes; Close waits for them
	// pruneStopped (under pruneMu) refuses new background prunes.
	pruneStopped bool
}

var _ storage.Store = (*Store)(nil)

// Open connects to the database, waiting up to cfg.StartupTimeout for it to
// answer, migrates the schema and starts the LISTEN loop.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if cfg.DSN == "" {
		return nil, fmt.Errorf("postgres: no DSN: set storage.postgres.dsn or %s", EnvDSN)
	}
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse DSN: %w", err)
	}
	pc.MaxConns = cfg.MaxConns
	pc.ConnConfig.ConnectTimeout = cfg.ConnectTimeout
	log := cfg.Logger.With().Str("store", "postgres").Str("db", pc.ConnConfig.Host+"/"+pc.ConnConfig.Database).Logger()

	if err := waitReachable(ctx, pc, cfg.StartupTimeout, log); err != nil {
		return nil, err
	}
	if err := migrateConfig(ctx, pc.ConnConfig.Copy(), log); err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: pool: %w", err)
	}
	s := &Store{pool: pool, log: log, lastPrune: map[string]time.Time{}}
	s.listener = startListener(pc.ConnConfig.Copy(), log)
	return s, nil
}

// waitReachable tries to connect until it works or timeout passes, logging
// one line per failed attempt window.
func waitReachable(ctx context.Context, pc *pgxpool.Config, timeout time.Duration, log zerolog.Logger) error {
	start := time.Now()
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, pc.ConnConfig.ConnectTimeout)
		conn, err := pgconn.ConnectConfig(actx, &pc.ConnConfig.Config)
		cancel()
		if err == nil {
			if cerr := conn.Close(ctx); cerr != nil {
				log.Debug().Err(cerr).Msg("closing probe connection")
			}
			if attempt > 1 {
				log.Info().Dur("waited", time.Since(start)).Msg("postgres reachable")
			}
			return nil
		}
		left := timeout - time.Since(start)
		if timeout < 0 || left <= 0 || ctx.Err() != nil {
			return fmt.Errorf("postgres: database not reachable after %v (%d attempts): %w", time.Since(start).Round(time.Millisecond), attempt, err)
		}
		wait := min(backoff, left)
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Dur("gives_up_in", left).
			Msg("postgres not reachable yet; retrying")
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres: waiting for database: %w", ctx.Err())
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// Users returns the account store.
func (s *Store) Users() storage.UserStore { return users{s} }

// Rosters returns the roster store.
func (s *Store) Rosters() storage.RosterStore { return rosters{s} }

// Offline returns the offline message store.
func (s *Store) Offline() storage.OfflineStore { return offline{s} }

// Queue returns the component queue store.
func (s *Store) Queue() storage.QueueStore { return queue{s} }

// Ping checks that the database answers a query right now.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Close stops the LISTEN loop and closes the pool. Subscription channels
// are not closed; they just receive nothing more. Calls after Close return
// storage.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return storage.ErrClosed
	}
	s.listener.stop()
	// No prune starts once pruneStopped is set; one that started called
	// Add under the same lock, so Wait sees it.
	s.pruneMu.Lock()
	s.pruneStopped = true
	s.pruneMu.Unlock()
	s.pruning.Wait()
	s.pool.Close()
	return nil
}

// check returns ErrClosed after Close.
func (s *Store) check() error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	return nil
}

// SQLSTATE codes mapped to storage sentinels.
const (
	codeUniqueViolation = "23505"
)

// wrap maps driver errors to storage sentinels and adds what failed.
func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == codeUniqueViolation {
		return fmt.Errorf("postgres: %s: %w", what, storage.ErrExists)
	}
	return fmt.Errorf("postgres: %s: %w", what, err)
}
