package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"xcollect.dev/xcollect/storage"
)

// Options configure Open.
type Options struct {
	// Logger receives lifecycle lines (open, close). Default: zerolog.Nop().
	Logger zerolog.Logger
	// NoSync skips fsync on commit. Tests only: a crash may lose or corrupt
	// committed data. Default false.
	NoSync bool
	// OpenTimeout bounds waiting for the file lock held by another process.
	// Default 1s.
	OpenTimeout time.Duration
}

// Store is a storage.Store in one bbolt file. It is safe for concurrent use.
type Store struct {
	db     *bolt.DB
	log    zerolog.Logger
	path   string
	closed atomic.Bool
	subs   notifier
	book   leaseBook  // queue leases and claim counts (in memory)
	writes writeGroup // concurrent write transactions share one commit
}

var _ storage.Store = (*Store)(nil)

// Top-level bucket names.
var (
	bktUsers    = []byte("users")
	bktDomains  = []byte("domains")
	bktRosters  = []byte("rosters")
	bktOffline  = []byte("offline")
	bktOffTime  = []byte("offtime")
	bktOffCount = []byte("offcount")
	bktQueue    = []byte("queue")
)

// Open opens (creating if needed) the store in the file at path.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("embedded: open: empty path")
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opts.OpenTimeout,
		NoSync:       opts.NoSync,
		FreelistType: bolt.FreelistMapType,
		// The freelist is rebuilt by a scan on open instead of being
		// written on every commit: cheaper commits for a write-heavy queue.
		NoFreelistSync: true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bktUsers, bktDomains, bktRosters, bktOffline, bktOffTime, bktOffCount, bktQueue} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("bucket %s: %w", name, err)
			}
		}
		return dropLeases(tx)
	})
	if err != nil {
		// The open error is the one worth reporting.
		_ = db.Close()
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	s := &Store{db: db, log: opts.Logger, path: path}
	s.subs.init()
	s.log.Info().Str("path", path).Bool("nosync", opts.NoSync).Msg("embedded store opened")
	return s, nil
}

// Users returns the account store.
func (s *Store) Users() storage.UserStore { return users{s} }

// Rosters returns the roster store.
func (s *Store) Rosters() storage.RosterStore { return rosters{s} }

// Offline returns the offline message store.
func (s *Store) Offline() storage.OfflineStore { return offline{s} }

// Queue returns the component queue.
func (s *Store) Queue() storage.QueueStore { return queue{s} }

// Ping reports whether the store is open.
func (s *Store) Ping(ctx context.Context) error {
	return s.view(ctx, "ping", func(*bolt.Tx) error { return nil })
}

// Close closes the file after running transactions finish. Calls after Close
// fail with storage.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return fmt.Errorf("embedded: close: %w", storage.ErrClosed)
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("embedded: close: %w", err)
	}
	s.log.Info().Str("path", s.path).Msg("embedded store closed")
	return nil
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	return ctx.Err()
}

// update runs fn in a write transaction, shared with the other writers of
// the moment (group.go: fn may run more than once), and wraps its error
// with op.
func (s *Store) update(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := s.check(ctx); err != nil {
		return wrap(op, err)
	}
	return wrap(op, s.writes.update(s.db, fn))
}

// batch is update through bolt's Batch: calls from concurrent goroutines
// share one transaction (one fsync). fn must be idempotent: it may run
// again alone when another call of the batch failed.
func (s *Store) batch(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := s.check(ctx); err != nil {
		return wrap(op, err)
	}
	return wrap(op, s.db.Batch(fn))
}

// view runs fn in a read transaction and wraps its error with op.
func (s *Store) view(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := s.check(ctx); err != nil {
		return wrap(op, err)
	}
	return wrap(op, s.db.View(fn))
}

func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		err = storage.ErrClosed
	}
	return fmt.Errorf("embedded: %s: %w", op, err)
}

// Key and value helpers. Every slice handed to bbolt is freshly allocated:
// bbolt keeps it until the commit.

func u64(v uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)
}

// joinKey is a \x00 b.
func joinKey(a string, b []byte) []byte {
	k := make([]byte, 0, len(a)+1+len(b))
	k = append(k, a...)
	k = append(k, 0)
	return append(k, b...)
}

// prefixKey is a \x00: the prefix of every joinKey(a, …).
func prefixKey(a string) []byte { return joinKey(a, nil) }

// idKey is a \x00 id.
func idKey(a string, id uint64) []byte {
	k := make([]byte, 0, len(a)+9)
	k = append(k, a...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, id)
}

// afterPrefix is the first key after every a \x00 … key.
func afterPrefix(a []byte) []byte {
	k := make([]byte, 0, len(a)+1)
	k = append(k, a...)
	return append(k, 1)
}

func hasPrefix(k, prefix []byte) bool {
	return len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix)
}

// domainOf returns the domain part of a bare JID.
func domainOf(user string) string {
	if i := strings.IndexByte(user, '@'); i >= 0 {
		return user[i+1:]
	}
	return user
}

func unixNano(v uint64) time.Time { return time.Unix(0, int64(v)) }

// Path returns the file the store was opened on.
func (s *Store) Path() string { return s.path }

// dropLeases deletes every component's partition leases. bolt's file lock
// means no other process uses the store, so every lease found at open
// belongs to a connection of an earlier process (a crash leaves them
// behind): keeping them would stall delivery of those partitions until
// they expire (component LeaseDuration, 30s).
func dropLeases(tx *bolt.Tx) error {
	q := tx.Bucket(bktQueue)
	var names [][]byte
	if err := q.ForEach(func(k, v []byte) error {
		if v == nil {
			names = append(names, bytes.Clone(k))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, name := range names {
		b := q.Bucket(name)
		if b.Bucket(bktLeases) == nil {
			continue
		}
		if err := b.DeleteBucket(bktLeases); err != nil {
			return fmt.Errorf("component %s: drop leases: %w", name, err)
		}
		if _, err := b.CreateBucket(bktLeases); err != nil {
			return fmt.Errorf("component %s: drop leases: %w", name, err)
		}
	}
	return nil
}
