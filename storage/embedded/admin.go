package embedded

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"xcollect.dev/xcollect/storage"
)

// Stats reads the counters (O(1)), walks partitions sender by sender and
// the leases.
func (q queue) Stats(ctx context.Context, component string) ([]storage.QueueStats, error) {
	var out []storage.QueueStats
	err := q.s.view(ctx, "stats", func(tx *bolt.Tx) error {
		out = nil
		var names []string
		if component != "" {
			names = []string{component}
		} else {
			err := tx.Bucket(bktQueue).ForEachBucket(func(k []byte) error {
				names = append(names, string(k))
				return nil
			})
			if err != nil {
				return err
			}
		}
		for _, name := range names {
			st := storage.QueueStats{Component: name}
			c, err := openComp(tx, name, false)
			if err != nil {
				return err
			}
			if c != nil {
				st.Rows, st.Bytes, st.DeadLetters = c.nRows, c.nBytes, c.nDead
				pc := c.parts.Cursor()
				for k, _ := pc.First(); k != nil; k, _ = pc.Seek(afterPrefix(k[:len(k)-9])) {
					if len(k) < 9 {
						return fmt.Errorf("partition key %q: %w", k, errCorrupt)
					}
					st.Partitions++
				}
				if _, v := c.rows.Cursor().First(); len(v) >= 9 {
					st.Oldest = unixNano(binary.BigEndian.Uint64(v[1:9]))
				}
			}
			out = append(out, st)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Leases after the transaction: the book's lock is never taken inside
	// one (see leaseBook.attempts).
	now := time.Now()
	for i := range out {
		out[i].Leased = q.s.book.leased(out[i].Component, now)
	}
	return out, nil
}

// List returns rows in ID order; limit <= 0 means all.
func (q queue) List(ctx context.Context, component string, dead bool, limit int) ([]storage.QueueItem, error) {
	var out []storage.QueueItem
	counted := q.s.book.attempts(component) // not inside the transaction
	err := q.s.view(ctx, "list "+component, func(tx *bolt.Tx) error {
		out = nil
		c, err := openComp(tx, component, false)
		if err != nil || c == nil {
			return err
		}
		b := c.rows
		if dead {
			b = c.dead
		}
		cur := b.Cursor()
		for k, v := cur.First(); k != nil && (limit <= 0 || len(out) < limit); k, v = cur.Next() {
			if len(k) != 8 {
				return fmt.Errorf("row key %q: %w", k, errCorrupt)
			}
			id := binary.BigEndian.Uint64(k)
			it, err := decodeRow(component, id, v)
			if err != nil {
				return err
			}
			if !dead {
				it.Attempts = attemptsOf(c.parts.Get(idKey(it.Sender, id)))
				if n, ok := counted[id]; ok {
					it.Attempts = n
				}
			}
			out = append(out, it)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Expire walks the component's rows in ID order and moves those enqueued
// before t to the dead letters.
func (q queue) Expire(ctx context.Context, component string, before time.Time) (int, error) {
	var n int
	var moved []uint64
	counted := q.s.book.attempts(component) // not inside the transaction
	err := q.s.update(ctx, "expire "+component, func(tx *bolt.Tx) error {
		n, moved = 0, nil
		c, err := openComp(tx, component, false)
		if err != nil || c == nil {
			return err
		}
		var victims []uint64
		cur := c.rows.Cursor()
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			if len(k) != 8 || len(v) < 9 {
				return fmt.Errorf("row key %q: %w", k, errCorrupt)
			}
			if unixNano(binary.BigEndian.Uint64(v[1:9])).Before(before) {
				victims = append(victims, binary.BigEndian.Uint64(k))
			}
		}
		for _, id := range victims {
			it, ok, err := c.deleteRow(id)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if n, ok := counted[id]; ok {
				it.Attempts = n
			}
			it.Reason = "expired"
			if err := c.dead.Put(u64(id), encodeRow(&it)); err != nil {
				return err
			}
			c.nDead++
			n++
			moved = append(moved, id)
		}
		return c.saveCounters()
	})
	if err == nil {
		q.s.book.forget(component, moved)
	}
	return n, err
}

// deadIDs returns the dead letter IDs that ids names (all when empty), in
// ascending order.
func deadIDs(c *comp, ids []int64) ([]uint64, error) {
	var out []uint64
	if len(ids) == 0 {
		err := c.dead.ForEach(func(k, _ []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("dead key %q: %w", k, errCorrupt)
			}
			out = append(out, binary.BigEndian.Uint64(k))
			return nil
		})
		return out, err
	}
	for _, id := range ids {
		if id > 0 && c.dead.Get(u64(uint64(id))) != nil {
			out = append(out, uint64(id))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Replay gives each dead letter a new ID, in the order of the old ones so
// that every sender's order is kept, with Enqueued set to now (so that the
// next expiry sweep does not kill it again) and its Attempts kept.
func (q queue) Replay(ctx context.Context, component string, ids []int64) (int, error) {
	var n int
	err := q.s.update(ctx, "replay "+component, func(tx *bolt.Tx) error {
		n = 0
		c, err := openComp(tx, component, false)
		if err != nil || c == nil {
			return err
		}
		victims, err := deadIDs(c, ids)
		if err != nil {
			return err
		}
		seq := tx.Bucket(bktQueue)
		now := time.Now()
		for _, old := range victims {
			key := u64(old)
			it, err := decodeRow(component, old, c.dead.Get(key))
			if err != nil {
				return err
			}
			id, err := seq.NextSequence()
			if err != nil {
				return err
			}
			it.Reason, it.Enqueued = "", now
			if err := c.putRow(id, &it); err != nil {
				return err
			}
			if err := c.dead.Delete(key); err != nil {
				return err
			}
			c.nDead--
			n++
		}
		return c.saveCounters()
	})
	if err == nil && n > 0 {
		q.s.subs.notify(component)
	}
	return n, err
}

// Drop deletes dead letters.
func (q queue) Drop(ctx context.Context, component string, ids []int64) (int, error) {
	var n int
	err := q.s.update(ctx, "drop "+component, func(tx *bolt.Tx) error {
		n = 0
		c, err := openComp(tx, component, false)
		if err != nil || c == nil {
			return err
		}
		victims, err := deadIDs(c, ids)
		if err != nil {
			return err
		}
		for _, id := range victims {
			if err := c.dead.Delete(u64(id)); err != nil {
				return err
			}
		}
		n = len(victims)
		c.nDead -= int64(n)
		return c.saveCounters()
	})
	return n, err
}
