// Package postgres is the cluster store: storage.Store on PostgreSQL (15+)
// through github.com/jackc/pgx/v5 and pgxpool. Every node of a cluster opens
// the same database.
//
// It owns the schema (embedded, versioned migrations in migrations/, applied
// by Open and by Migrate under a pg_advisory_lock so that nodes starting at
// once are safe), the SQL of every storage interface, and one goroutine per
// Store holding a LISTEN connection on channel "xcollect_queue" that wakes
// Subscribe channels when any node commits rows for a component. It must
// not leak driver types: callers match the storage sentinels (ErrExists,
// ErrNotFound, ErrLimit, ErrClosed) with errors.Is.
//
// Queue design in one paragraph: Enqueue writes a whole batch in one
// transaction on one pooled connection (2 round trips: BEGIN + lock
// counters + dedupe lookup, then INSERT … unnest, counters, pg_notify and
// COMMIT in one batch; a third for COMMIT after a COPY of 512+ rows). The
// limit check reads one queue_counters row per component, kept exact in the
// same transaction, so it costs the same for 10 or 10 million rows. Rows of
// one (component, sender) form a partition; Claim leases partitions with
// FOR UPDATE SKIP LOCKED and an expiry, renews its own, resets claims of
// partitions taken over from an expired owner, and hands out unclaimed rows
// in id order. Ack deletes rows. Lock order (queue.go) keeps every writer
// deadlock-free.
//
// The DSN comes from the caller's config; DSNFromEnv reads
// XCOLLECT_POSTGRES_DSN for deployments that pass it in the environment.
//
// Read first: Open, Config, Store, then queue.go.
package postgres
