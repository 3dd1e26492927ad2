package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"xcollect.dev/xcollect/storage"
)

// queue implements storage.QueueStore.
//
// Lock order of every transaction that writes a component's queue (this is
// what keeps them free of deadlocks): the component's queue_counters row,
// then its queue_partitions rows in sender order (COLLATE "C"), then queue
// rows. Claim takes no counters lock: it waits only for its own partitions
// (in order) and takes new ones with SKIP LOCKED, which never waits.
type queue struct{ s *Store }

// notifyChannel is the LISTEN/NOTIFY channel; the payload is the component.
const notifyChannel = "xcollect_queue"

// copyThreshold is the batch size from which Enqueue uses COPY instead of
// INSERT … SELECT FROM unnest (COPY wins above a few hundred rows).
const copyThreshold = 512

// prunePeriod is how often Enqueue prunes a component's expired dedupe rows.
const prunePeriod = 30 * time.Second

// lockCounters locks (creating if needed) the counters rows of comps, which
// must be sorted.
const lockCountersSQL = `SELECT component, rows, bytes, now() FROM queue_counters
	WHERE component = ANY($1) ORDER BY component COLLATE "C" FOR UPDATE`

const insertCountersSQL = `INSERT INTO queue_counters (component)
	SELECT c FROM unnest($1::text[]) AS c ORDER BY c COLLATE "C" ON CONFLICT DO NOTHING`

type dedupeKey struct{ component, sender, id string }

type counter struct{ rows, bytes int64 }

func micros(d time.Duration) int64 { return d.Microseconds() }

func (q queue) Enqueue(ctx context.Context, items []storage.QueueItem, limits func(string) storage.QueueLimits) ([]storage.EnqueueResult, error) {
	if err := q.s.check(); err != nil {
		return nil, err
	}
	results := make([]storage.EnqueueResult, len(items))
	if len(items) == 0 {
		return results, nil
	}
	lim := map[string]storage.QueueLimits{}
	for _, it := range items {
		if _, ok := lim[it.Component]; !ok {
			if limits != nil {
				lim[it.Component] = limits(it.Component)
			} else {
				lim[it.Component] = storage.QueueLimits{}
			}
		}
	}
	comps := make([]string, 0, len(lim))
	for c := range lim {
		comps = append(comps, c)
	}
	slices.Sort(comps)

	// Two round trips on one connection, the transaction spanning both:
	// 1 begins, locks the counters, looks up dedupe keys; 2 writes and
	// commits (a third only for COPY). BEGIN and COMMIT are statements of
	// the batches rather than pgx.Tx calls, which would spend a round trip
	// on the commit alone while the counters row stays locked. A
	// connection given back mid-transaction (any error) is closed by the
	// pool, which rolls the transaction back.
	conn, err := q.s.pool.Acquire(ctx)
	if err != nil {
		return nil, wrap(err, "enqueue %d items: connection", len(items))
	}
	defer conn.Release()

	// Round trip 1: begin, lock counters, look up dedupe keys.
	var kc, ks, ki []string
	var kw []int64
	for _, it := range items {
		if w := lim[it.Component].DedupeWindow; it.OriginID != "" && w > 0 {
			kc, ks, ki, kw = append(kc, it.Component), append(ks, it.Sender), append(ki, it.OriginID), append(kw, micros(w))
		}
	}
	counters := map[string]*counter{}
	seen := map[dedupeKey]bool{}
	var now time.Time
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(insertCountersSQL, comps)
	b.Queue(lockCountersSQL, comps).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var c string
			var n counter
			if err := rows.Scan(&c, &n.rows, &n.bytes, &now); err != nil {
				return err
			}
			counters[c] = &n
		}
		return rows.Err()
	})
	if len(kc) > 0 {
		// One primary-key probe per item, whatever the statistics say: as
		// a plain join the planner may hash the whole table, and with the
		// window test inside the probe it may pick the index on at (both
		// seen with fresh, unanalysed tables). LIMIT keeps the window test
		// out of the probe.
		b.Queue(`SELECT k.c, k.s, k.i FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS k(c, s, i, w)
			CROSS JOIN LATERAL (SELECT d.at FROM queue_dedupe d
				WHERE d.component = k.c AND d.sender = k.s AND d.origin_id = k.i LIMIT 1) AS hit
			WHERE hit.at >= now() - k.w * interval '1 microsecond'`, kc, ks, ki, kw).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var k dedupeKey
				if err := rows.Scan(&k.component, &k.sender, &k.id); err != nil {
					return err
				}
				seen[k] = true
			}
			return rows.Err()
		})
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, wrap(err, "enqueue %d items", len(items))
	}

	// Decide each item: duplicate, full or queued.
	type part struct{ component, sender string }
	parts := map[part]int64{}
	var queued []int
	var dc, ds, di []string
	for i, it := range items {
		l := lim[it.Component]
		c := counters[it.Component]
		if c == nil {
			return nil, fmt.Errorf("postgres: enqueue %d items: no counters row for %q", len(items), it.Component)
		}
		k := dedupeKey{it.Component, it.Sender, it.OriginID}
		dedupe := it.OriginID != "" && l.DedupeWindow > 0
		switch {
		case dedupe && seen[k]:
			results[i] = storage.Duplicate
		case l.MaxRows > 0 && c.rows+1 > l.MaxRows, l.MaxBytes > 0 && c.bytes+int64(len(it.Stanza)) > l.MaxBytes:
			results[i] = storage.Full
		default:
			results[i] = storage.Queued
			c.rows++
			c.bytes += int64(len(it.Stanza))
			parts[part{it.Component, it.Sender}]++
			queued = append(queued, i)
			if dedupe {
				seen[k] = true
				dc, ds, di = append(dc, it.Component), append(ds, it.Sender), append(di, it.OriginID)
			}
		}
	}
	if len(queued) == 0 {
		return results, wrap(commit(ctx, conn), "enqueue %d items", len(items))
	}

	// Round trip 2: partitions, rows, dedupe keys, counters, notify, commit.
	b = &pgx.Batch{}
	var pc, ps []string
	var pn []int64
	for p, n := range parts {
		pc, ps, pn = append(pc, p.component), append(ps, p.sender), append(pn, n)
	}
	b.Queue(`INSERT INTO queue_partitions (component, sender, rows)
		SELECT c, s, n FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(c, s, n)
		ORDER BY c COLLATE "C", s COLLATE "C"
		ON CONFLICT (component, sender) DO UPDATE SET rows = queue_partitions.rows + excluded.rows`, pc, ps, pn)
	var cc []string
	var cr, cb []int64
	for _, c := range comps {
		n := counters[c]
		cc, cr, cb = append(cc, c), append(cr, n.rows), append(cb, n.bytes)
	}
	b.Queue(`UPDATE queue_counters q SET rows = t.r, bytes = t.b
		FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS t(c, r, b) WHERE q.component = t.c`, cc, cr, cb)
	if len(dc) > 0 {
		b.Queue(`INSERT INTO queue_dedupe (component, sender, origin_id, at)
			SELECT c, s, i, now() FROM unnest($1::text[], $2::text[], $3::text[]) AS t(c, s, i)
			ON CONFLICT (component, sender, origin_id) DO UPDATE SET at = excluded.at`, dc, ds, di)
	}
	if len(queued) < copyThreshold {
		var qc, qs, qf, qi []string
		var qb [][]byte
		for _, i := range queued {
			it := &items[i]
			qc, qs, qf, qi, qb = append(qc, it.Component), append(qs, it.Sender), append(qf, it.From), append(qi, it.StanzaID), append(qb, it.Stanza)
		}
		b.Queue(`INSERT INTO queue (component, sender, from_jid, stanza_id, stanza, enqueued)
			SELECT c, s, f, i, b, now()
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[]) WITH ORDINALITY AS t(c, s, f, i, b, o)
			ORDER BY o`, qc, qs, qf, qi, qb)
	}
	notify := make([]string, 0, len(comps))
	for _, c := range comps {
		for _, i := range queued {
			if items[i].Component == c {
				notify = append(notify, c)
				break
			}
		}
	}
	b.Queue(`SELECT pg_notify('`+notifyChannel+`', c) FROM unnest($1::text[]) AS c`, notify)
	useCopy := len(queued) >= copyThreshold
	if !useCopy {
		b.Queue("COMMIT").Exec(committed)
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, wrap(err, "enqueue %d items", len(items))
	}
	if useCopy {
		_, err := conn.CopyFrom(ctx, pgx.Identifier{"queue"},
			[]string{"component", "sender", "from_jid", "stanza_id", "stanza", "enqueued"},
			pgx.CopyFromSlice(len(queued), func(j int) ([]any, error) {
				it := &items[queued[j]]
				return []any{it.Component, it.Sender, it.From, it.StanzaID, it.Stanza, now}, nil
			}))
		if err != nil {
			return nil, wrap(err, "enqueue %d items: copy", len(items))
		}
		if err := commit(ctx, conn); err != nil {
			return nil, wrap(err, "enqueue %d items: commit", len(items))
		}
	}
	for _, c := range notify {
		q.s.listener.signal(c)
	}
	q.pruneDedupe(comps, lim)
	return results, nil
}

// errNotCommitted: COMMIT answered ROLLBACK (the transaction had failed).
var errNotCommitted = errors.New("transaction rolled back at commit")

// committed checks the tag of a COMMIT statement.
func committed(tag pgconn.CommandTag) error {
	if tag.String() != "COMMIT" {
		return fmt.Errorf("%w (%s)", errNotCommitted, tag)
	}
	return nil
}

// commit sends COMMIT on conn and checks that it committed.
func commit(ctx context.Context, conn *pgxpool.Conn) error {
	tag, err := conn.Exec(ctx, "COMMIT")
	if err != nil {
		return err
	}
	return committed(tag)
}

// pruneDedupe deletes dedupe rows older than the window, at most once per
// prunePeriod per component and store, in the background: the caller (the
// node's committer) goes on with the next batch. Failure is only logged:
// stale rows are ignored by the lookup anyway.
func (q queue) pruneDedupe(comps []string, lim map[string]storage.QueueLimits) {
	now := time.Now()
	var due []string
	q.s.pruneMu.Lock()
	for _, c := range comps {
		if lim[c].DedupeWindow > 0 && now.Sub(q.s.lastPrune[c]) >= prunePeriod {
			q.s.lastPrune[c] = now
			due = append(due, c)
		}
	}
	if len(due) == 0 || q.s.pruneStopped {
		q.s.pruneMu.Unlock()
		return
	}
	q.s.pruning.Add(1) // under pruneMu: Close's Wait sees it, or pruneStopped was set first
	q.s.pruneMu.Unlock()
	go func() {
		defer q.s.pruning.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		q.prune(ctx, due, lim)
	}()
}

func (q queue) prune(ctx context.Context, due []string, lim map[string]storage.QueueLimits) {
	for _, c := range due {
		tag, err := q.s.pool.Exec(ctx, `DELETE FROM queue_dedupe WHERE component = $1 AND at < now() - $2::bigint * interval '1 microsecond'`,
			c, micros(lim[c].DedupeWindow))
		if err != nil {
			q.s.log.Warn().Err(err).Str("component", c).Msg("pruning queue dedupe rows")
			continue
		}
		q.s.log.Debug().Str("component", c).Int64("rows", tag.RowsAffected()).Msg("pruned queue dedupe rows")
	}
}

const itemColumns = `id, component, sender, from_jid, stanza_id, stanza, enqueued, attempts`

func scanItem(row pgx.CollectableRow) (storage.QueueItem, error) {
	var it storage.QueueItem
	err := row.Scan(&it.ID, &it.Component, &it.Sender, &it.From, &it.StanzaID, &it.Stanza, &it.Enqueued, &it.Attempts)
	return it, err
}

func scanDeadItem(row pgx.CollectableRow) (storage.QueueItem, error) {
	var it storage.QueueItem
	err := row.Scan(&it.ID, &it.Component, &it.Sender, &it.From, &it.StanzaID, &it.Stanza, &it.Enqueued, &it.Attempts, &it.Reason)
	return it, err
}

func (q queue) Claim(ctx context.Context, component, owner string, lease time.Duration, maxPartitions, max int) ([]storage.QueueItem, error) {
	if err := q.s.check(); err != nil {
		return nil, err
	}
	var items []storage.QueueItem
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	// Own partitions, in lock order; release the empty ones, renew the rest.
	b.Queue(`SELECT sender FROM queue_partitions WHERE component = $1 AND owner = $2
		ORDER BY sender COLLATE "C" FOR UPDATE`, component, owner)
	b.Queue(`DELETE FROM queue_partitions WHERE component = $1 AND owner = $2 AND rows <= 0`, component, owner)
	b.Queue(`UPDATE queue_partitions SET expires = now() + $3::bigint * interval '1 microsecond'
		WHERE component = $1 AND owner = $2`, component, owner, micros(lease))
	// Take free and expired partitions up to maxPartitions held in all (no
	// cap when <= 0); hand their rows out afresh.
	takeLimit := "LIMIT greatest(0, $4::int - (SELECT count(*) FROM queue_partitions WHERE component = $1 AND owner = $2))"
	args := []any{component, owner, micros(lease), maxPartitions}
	if maxPartitions <= 0 {
		takeLimit, args = "", args[:3]
	}
	{
		b.Queue(`WITH c AS (
				SELECT sender FROM queue_partitions
				WHERE component = $1 AND rows > 0 AND (owner IS NULL OR expires < now())
				`+takeLimit+` FOR UPDATE SKIP LOCKED),
			t AS (
				UPDATE queue_partitions p SET owner = $2, expires = now() + $3::bigint * interval '1 microsecond'
				FROM c WHERE p.component = $1 AND p.sender = c.sender RETURNING p.sender)
			UPDATE queue q SET claimed_by = NULL FROM t
			WHERE q.component = $1 AND q.sender = t.sender AND q.claimed_by IS NOT NULL`,
			args...)
	}
	if max > 0 {
		b.Queue(`WITH picked AS (
				SELECT x.id FROM queue_partitions p
				CROSS JOIN LATERAL (
					SELECT id FROM queue
					WHERE component = $1 AND sender = p.sender AND claimed_by IS DISTINCT FROM $2
					ORDER BY component, sender, id LIMIT $3) x -- the order of index queue_partition
				WHERE p.component = $1 AND p.owner = $2
				ORDER BY x.id LIMIT $3)
			UPDATE queue q SET claimed_by = $2, attempts = q.attempts + 1 FROM picked WHERE q.id = picked.id
			RETURNING q.id, q.component, q.sender, q.from_jid, q.stanza_id, q.stanza, q.enqueued, q.attempts`,
			component, owner, max).Query(func(rows pgx.Rows) error {
			var err error
			items, err = pgx.CollectRows(rows, scanItem)
			return err
		})
	}
	br := q.s.pool.SendBatch(ctx, b)
	tx := br.Tx()
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	if err := br.Close(); err != nil {
		return nil, wrap(err, "claim %s for %s", component, owner)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, wrap(err, "claim %s for %s: commit", component, owner)
	}
	slices.SortFunc(items, func(a, b storage.QueueItem) int { return cmp.Compare(a.ID, b.ID) })
	return items, nil
}

func (q queue) Ack(ctx context.Context, component string, ids []int64) error {
	if err := q.s.check(); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	b.Queue(`SELECT 1 FROM queue_counters WHERE component = $1 FOR UPDATE`, component)
	b.Queue(`SELECT 1 FROM queue_partitions WHERE component = $1
		AND sender IN (SELECT sender FROM queue WHERE component = $1 AND id = ANY($2))
		ORDER BY sender COLLATE "C" FOR UPDATE`, component, ids)
	b.Queue(`WITH d AS (DELETE FROM queue WHERE component = $1 AND id = ANY($2) RETURNING sender, length(stanza) AS n),
			g AS (SELECT sender, count(*) AS r FROM d GROUP BY sender),
			p AS (UPDATE queue_partitions p SET rows = p.rows - g.r FROM g WHERE p.component = $1 AND p.sender = g.sender)
		UPDATE queue_counters SET rows = rows - (SELECT count(*) FROM d), bytes = bytes - (SELECT coalesce(sum(n), 0) FROM d)
		WHERE component = $1`, component, ids)
	return q.commitBatch(ctx, b, "ack %d rows of %s", len(ids), component)
}

// commitBatch sends b (which must begin a transaction) and commits it.
func (q queue) commitBatch(ctx context.Context, b *pgx.Batch, format string, args ...any) error {
	br := q.s.pool.SendBatch(ctx, b)
	tx := br.Tx()
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	if err := br.Close(); err != nil {
		return wrap(err, format, args...)
	}
	return wrap(tx.Commit(ctx), format+": commit", args...)
}

func (q queue) Release(ctx context.Context, component, owner string) error {
	return q.release(ctx, component, "owner = $2", owner)
}

func (q queue) ReleasePrefix(ctx context.Context, component, prefix string) error {
	return q.release(ctx, component, "starts_with(owner, $2)", prefix)
}

// release drops the leases and claims of the owners that match (a
// condition on owner with $2).
func (q queue) release(ctx context.Context, component, match, arg string) error {
	if err := q.s.check(); err != nil {
		return err
	}
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	b.Queue(`SELECT sender FROM queue_partitions WHERE component = $1 AND `+match+`
		ORDER BY sender COLLATE "C" FOR UPDATE`, component, arg)
	b.Queue(`UPDATE queue q SET claimed_by = NULL FROM queue_partitions p
		WHERE p.component = $1 AND `+strings.ReplaceAll(match, "owner", "p.owner")+` AND q.component = $1 AND q.sender = p.sender AND q.claimed_by IS NOT NULL`,
		component, arg)
	b.Queue(`DELETE FROM queue_partitions WHERE component = $1 AND `+match+` AND rows <= 0`, component, arg)
	b.Queue(`UPDATE queue_partitions SET owner = NULL, expires = NULL WHERE component = $1 AND `+match, component, arg)
	b.Queue(`SELECT pg_notify('`+notifyChannel+`', $1)`, component)
	if err := q.commitBatch(ctx, b, "release %s for %s", component, arg); err != nil {
		return err
	}
	q.s.listener.signal(component)
	return nil
}

func (q queue) Stats(ctx context.Context, component string) ([]storage.QueueStats, error) {
	if err := q.s.check(); err != nil {
		return nil, err
	}
	rows, _ := q.s.pool.Query(ctx, `SELECT c.component, c.rows, c.bytes,
			(SELECT count(*) FROM queue_partitions p WHERE p.component = c.component AND p.rows > 0),
			(SELECT count(*) FROM queue_partitions p WHERE p.component = c.component AND p.owner IS NOT NULL AND p.expires > now()),
			(SELECT min(enqueued) FROM queue q WHERE q.component = c.component),
			(SELECT count(*) FROM dead_letters d WHERE d.component = c.component)
		FROM queue_counters c WHERE $1 = '' OR c.component = $1 ORDER BY c.component COLLATE "C"`, component)
	stats, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (storage.QueueStats, error) {
		var st storage.QueueStats
		var oldest *time.Time
		err := row.Scan(&st.Component, &st.Rows, &st.Bytes, &st.Partitions, &st.Leased, &oldest, &st.DeadLetters)
		if oldest != nil {
			st.Oldest = *oldest
		}
		return st, err
	})
	if err == nil && component != "" && len(stats) == 0 {
		stats = []storage.QueueStats{{Component: component}}
	}
	return stats, wrap(err, "stats of %q", component)
}

func (q queue) List(ctx context.Context, component string, dead bool, limit int) ([]storage.QueueItem, error) {
	if err := q.s.check(); err != nil {
		return nil, err
	}
	var lim *int
	if limit > 0 {
		lim = &limit
	}
	var items []storage.QueueItem
	var err error
	if dead {
		rows, _ := q.s.pool.Query(ctx, `SELECT `+itemColumns+`, reason FROM dead_letters WHERE component = $1 ORDER BY id LIMIT $2`, component, lim)
		items, err = pgx.CollectRows(rows, scanDeadItem)
	} else {
		rows, _ := q.s.pool.Query(ctx, `SELECT `+itemColumns+` FROM queue WHERE component = $1 ORDER BY id LIMIT $2`, component, lim)
		items, err = pgx.CollectRows(rows, scanItem)
	}
	return items, wrap(err, "list %s (dead=%v)", component, dead)
}

func (q queue) Expire(ctx context.Context, component string, before time.Time) (int, error) {
	if err := q.s.check(); err != nil {
		return 0, err
	}
	n := 0
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	b.Queue(`SELECT 1 FROM queue_counters WHERE component = $1 FOR UPDATE`, component)
	b.Queue(`SELECT 1 FROM queue_partitions WHERE component = $1
		AND sender IN (SELECT sender FROM queue WHERE component = $1 AND enqueued < $2)
		ORDER BY sender COLLATE "C" FOR UPDATE`, component, before)
	b.Queue(`WITH d AS (DELETE FROM queue WHERE component = $1 AND enqueued < $2 RETURNING *),
			ins AS (INSERT INTO dead_letters (id, component, sender, from_jid, stanza_id, stanza, enqueued, attempts, reason)
				SELECT id, component, sender, from_jid, stanza_id, stanza, enqueued, attempts, 'expired' FROM d),
			g AS (SELECT sender, count(*) AS r FROM d GROUP BY sender),
			p AS (UPDATE queue_partitions p SET rows = p.rows - g.r FROM g WHERE p.component = $1 AND p.sender = g.sender),
			c AS (UPDATE queue_counters SET rows = rows - (SELECT count(*) FROM d),
				bytes = bytes - (SELECT coalesce(sum(length(stanza)), 0) FROM d) WHERE component = $1)
		SELECT count(*) FROM d`, component, before).QueryRow(func(row pgx.Row) error { return row.Scan(&n) })
	b.Queue(`DELETE FROM queue_partitions WHERE component = $1 AND rows <= 0 AND (owner IS NULL OR expires < now())`, component)
	if err := q.commitBatch(ctx, b, "expire %s before %v", component, before); err != nil {
		return 0, err
	}
	return n, nil
}

func (q queue) Replay(ctx context.Context, component string, ids []int64) (int, error) {
	if err := q.s.check(); err != nil {
		return 0, err
	}
	if ids == nil {
		ids = []int64{}
	}
	n := 0
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	b.Queue(insertCountersSQL, []string{component})
	b.Queue(lockCountersSQL, []string{component})
	b.Queue(`INSERT INTO queue_partitions (component, sender, rows)
		SELECT $1, sender, count(*) FROM dead_letters
		WHERE component = $1 AND (cardinality($2::bigint[]) = 0 OR id = ANY($2))
		GROUP BY sender ORDER BY sender COLLATE "C"
		ON CONFLICT (component, sender) DO UPDATE SET rows = queue_partitions.rows + excluded.rows`, component, ids)
	b.Queue(`WITH d AS (DELETE FROM dead_letters WHERE component = $1 AND (cardinality($2::bigint[]) = 0 OR id = ANY($2)) RETURNING *),
			ins AS (INSERT INTO queue (component, sender, from_jid, stanza_id, stanza, enqueued, attempts)
				SELECT component, sender, from_jid, stanza_id, stanza, enqueued, attempts FROM d ORDER BY id),
			c AS (UPDATE queue_counters SET rows = rows + (SELECT count(*) FROM d),
				bytes = bytes + (SELECT coalesce(sum(length(stanza)), 0) FROM d) WHERE component = $1)
		SELECT count(*) FROM d`, component, ids).QueryRow(func(row pgx.Row) error { return row.Scan(&n) })
	b.Queue(`SELECT pg_notify('`+notifyChannel+`', $1)`, component)
	if err := q.commitBatch(ctx, b, "replay %d dead letters of %s", len(ids), component); err != nil {
		return 0, err
	}
	if n > 0 {
		q.s.listener.signal(component)
	}
	return n, nil
}

func (q queue) Drop(ctx context.Context, component string, ids []int64) (int, error) {
	if err := q.s.check(); err != nil {
		return 0, err
	}
	if ids == nil {
		ids = []int64{}
	}
	var n int64
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	// The counters lock keeps Drop out of a concurrent Replay's count.
	b.Queue(`SELECT 1 FROM queue_counters WHERE component = $1 FOR UPDATE`, component)
	b.Queue(`DELETE FROM dead_letters WHERE component = $1 AND (cardinality($2::bigint[]) = 0 OR id = ANY($2))`,
		component, ids).Exec(func(tag pgconn.CommandTag) error { n = tag.RowsAffected(); return nil })
	if err := q.commitBatch(ctx, b, "drop %d dead letters of %s", len(ids), component); err != nil {
		return 0, err
	}
	return int(n), nil
}

func (q queue) Subscribe(component string) (<-chan struct{}, func()) {
	return q.s.listener.subscribe(component)
}
