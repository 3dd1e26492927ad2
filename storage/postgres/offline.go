package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"xcollect.dev/xcollect/storage"
)

// offline implements storage.OfflineStore on table offline.
type offline struct{ s *Store }

// offlineLockClass is the first key of the two-key advisory lock that
// serialises StoreOffline per recipient, so the limit holds under
// concurrency. (Two-key locks never collide with the one-key migration lock.)
const offlineLockClass int32 = 0x0ff1

func (o offline) StoreOffline(ctx context.Context, to string, stanza []byte, limit int) error {
	if err := o.s.check(); err != nil {
		return err
	}
	if limit <= 0 {
		_, err := o.s.pool.Exec(ctx, `INSERT INTO offline (to_jid, stanza) VALUES ($1, $2)`, to, stanza)
		return wrap(err, "store offline message for %s", to)
	}
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	b.Queue(`SELECT pg_advisory_xact_lock($1, hashtext($2))`, offlineLockClass, to)
	ins := b.Queue(`INSERT INTO offline (to_jid, stanza) SELECT $1, $2
		WHERE (SELECT count(*) FROM offline WHERE to_jid = $1) < $3`, to, stanza, limit)
	stored := false
	ins.Exec(func(tag pgconn.CommandTag) error {
		stored = tag.RowsAffected() == 1
		return nil
	})
	br := o.s.pool.SendBatch(ctx, b)
	tx := br.Tx()
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	if err := br.Close(); err != nil {
		return wrap(err, "store offline message for %s", to)
	}
	if !stored {
		return wrap(storage.ErrLimit, "store offline message for %s (limit %d)", to, limit)
	}
	return wrap(tx.Commit(ctx), "store offline message for %s", to)
}

func (o offline) FetchOffline(ctx context.Context, to string, notBefore time.Time) ([]storage.OfflineMessage, error) {
	if err := o.s.check(); err != nil {
		return nil, err
	}
	rows, _ := o.s.pool.Query(ctx, `SELECT id, to_jid, stanza, stored FROM offline
		WHERE to_jid = $1 AND stored >= $2 ORDER BY id`, to, notBefore)
	msgs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (storage.OfflineMessage, error) {
		var m storage.OfflineMessage
		err := row.Scan(&m.ID, &m.To, &m.Stanza, &m.Stored)
		return m, err
	})
	return msgs, wrap(err, "fetch offline messages of %s", to)
}

func (o offline) DeleteOffline(ctx context.Context, to string, upTo int64) error {
	if err := o.s.check(); err != nil {
		return err
	}
	_, err := o.s.pool.Exec(ctx, `DELETE FROM offline WHERE to_jid = $1 AND id <= $2`, to, upTo)
	return wrap(err, "delete offline messages of %s up to %d", to, upTo)
}

func (o offline) ExpireOffline(ctx context.Context, before time.Time) (int, error) {
	if err := o.s.check(); err != nil {
		return 0, err
	}
	tag, err := o.s.pool.Exec(ctx, `DELETE FROM offline WHERE stored < $1`, before)
	if err != nil {
		return 0, wrap(err, "expire offline messages before %v", before)
	}
	return int(tag.RowsAffected()), nil
}
