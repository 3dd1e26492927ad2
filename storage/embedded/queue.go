package embedded

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"xcollect.dev/xcollect/storage"
)

type queue struct{ s *Store }

// maxDedupePrune bounds how many stale dedupe entries one Enqueue deletes
// per component, so that a large backlog of them is spread over commits.
const maxDedupePrune = 256

// Enqueue commits items in one write transaction (one fsync).
func (q queue) Enqueue(ctx context.Context, items []storage.QueueItem, limits func(component string) storage.QueueLimits) ([]storage.EnqueueResult, error) {
	if len(items) == 0 {
		return nil, q.s.check(ctx)
	}
	res := make([]storage.EnqueueResult, len(items))
	var woken []string
	err := q.s.update(ctx, "enqueue", func(tx *bolt.Tx) error {
		woken = woken[:0]
		now := time.Now()
		type state struct {
			c   *comp
			lim storage.QueueLimits
		}
		comps := map[string]*state{}
		seq := tx.Bucket(bktQueue)
		for i := range items {
			it := &items[i]
			st := comps[it.Component]
			if st == nil {
				c, err := openComp(tx, it.Component, true)
				if err != nil {
					return err
				}
				st = &state{c: c}
				if limits != nil {
					st.lim = limits(it.Component)
				}
				if err := pruneDedupe(c, now.Add(-st.lim.DedupeWindow)); err != nil {
					return err
				}
				comps[it.Component] = st
			}
			c, lim := st.c, st.lim
			var dkey []byte
			if lim.DedupeWindow > 0 && it.OriginID != "" {
				dkey = joinKey(it.Sender, []byte(it.OriginID))
				if v := c.dedupe.Get(dkey); len(v) == 8 && now.Sub(unixNano(binary.BigEndian.Uint64(v))) < lim.DedupeWindow {
					res[i] = storage.Duplicate
					continue
				}
			}
			if (lim.MaxRows > 0 && c.nRows+1 > lim.MaxRows) ||
				(lim.MaxBytes > 0 && c.nBytes+int64(len(it.Stanza)) > lim.MaxBytes) {
				res[i] = storage.Full
				continue
			}
			id, err := seq.NextSequence()
			if err != nil {
				return err
			}
			row := storage.QueueItem{
				Sender: it.Sender, From: it.From, StanzaID: it.StanzaID,
				Stanza: it.Stanza, Enqueued: now,
			}
			if err := c.putRow(id, &row); err != nil {
				return err
			}
			if dkey != nil {
				if old := c.dedupe.Get(dkey); len(old) == 8 {
					// Re-queued after its window: the old time entry goes.
					if err := c.dedupeT.Delete(append(bytes.Clone(old), dkey...)); err != nil {
						return err
					}
				}
				if err := c.dedupe.Put(dkey, u64(uint64(now.UnixNano()))); err != nil {
					return err
				}
				if err := c.dedupeT.Put(timeKey(now, dkey), nil); err != nil {
					return err
				}
			}
			res[i] = storage.Queued
			if !slices.Contains(woken, it.Component) {
				woken = append(woken, it.Component)
			}
		}
		for _, st := range comps {
			if err := st.c.saveCounters(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	q.s.subs.notify(woken...)
	return res, nil
}

// pruneDedupe deletes up to maxDedupePrune dedupe entries older than cutoff.
func pruneDedupe(c *comp, cutoff time.Time) error {
	cut := uint64(cutoff.UnixNano())
	var keys [][]byte
	cur := c.dedupeT.Cursor()
	for k, _ := cur.First(); k != nil && len(keys) < maxDedupePrune; k, _ = cur.Next() {
		if len(k) < 8 || binary.BigEndian.Uint64(k) >= cut {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := c.dedupeT.Delete(k); err != nil {
			return err
		}
		dkey := k[8:]
		// Only if the entry still has this time (it is not a newer one).
		if v := c.dedupe.Get(dkey); bytes.Equal(v, k[:8]) {
			if err := c.dedupe.Delete(dkey); err != nil {
				return err
			}
		}
	}
	return nil
}

// Claim is one write transaction: it walks owner's leases, then (below the
// cap) the partitions by seeking from sender to sender, then reads at most
// max unclaimed rows of each leased partition by seeking past its
// claimed-up-to id. Its cost grows with senders and max, not with rows.
func (q queue) Claim(ctx context.Context, component, owner string, leaseFor time.Duration, maxPartitions, max int) ([]storage.QueueItem, error) {
	// Leases live in memory (leases.go): a Claim reads rows in a read
	// transaction under the book's lock and writes nothing to the file.
	book := &q.s.book
	book.mu.Lock()
	defer book.mu.Unlock()
	var out []storage.QueueItem
	err := q.s.view(ctx, "claim "+component, func(tx *bolt.Tx) error {
		out = nil
		c, err := openComp(tx, component, false)
		if err != nil || c == nil {
			return err
		}
		cl := book.comp(component)
		now := time.Now()
		expiry := now.Add(leaseFor).UnixNano()
		pc := c.parts.Cursor()
		partitionEmpty := func(sender string) bool {
			prefix := joinKey(sender, nil)
			k, _ := pc.Seek(prefix)
			return !hasPrefix(k, prefix)
		}

		type held struct {
			sender string
			lease  *lease
		}
		var mine []held
		have := map[string]bool{}
		for s, l := range cl.bySender {
			switch {
			case l.owner == owner:
				mine = append(mine, held{s, l})
				have[s] = true
			case l.expiry <= now.UnixNano() && partitionEmpty(s):
				delete(cl.bySender, s) // an expired lease on an empty partition
			}
		}
		slices.SortFunc(mine, func(a, b held) int { return strings.Compare(a.sender, b.sender) })

		// Take free and expired partitions up to the cap.
		for k, _ := pc.First(); k != nil && (maxPartitions <= 0 || len(mine) < maxPartitions); k, _ = pc.Seek(afterPrefix(k[:len(k)-9])) {
			if len(k) < 9 {
				return fmt.Errorf("partition key %q: %w", k, errCorrupt)
			}
			sender := string(k[:len(k)-9])
			if have[sender] {
				continue
			}
			if l := cl.bySender[sender]; l != nil && l.expiry > now.UnixNano() {
				continue // another owner's live lease
			}
			// free, or taken over from an expired owner: hand its rows out afresh
			l := &lease{owner: owner}
			cl.bySender[sender] = l
			mine = append(mine, held{sender, l})
			have[sender] = true
		}

		// Candidates: the first max unclaimed rows of each partition.
		type cand struct {
			id   uint64
			part int32
			att  int32
		}
		var cands []cand
		for i, h := range mine {
			prefix := joinKey(h.sender, nil)
			k, _ := pc.Seek(prefix)
			if !hasPrefix(k, prefix) {
				delete(cl.bySender, h.sender) // empty partition: release it
				mine[i].lease = nil
				continue
			}
			n := 0
			for k, v := pc.Seek(idKey(h.sender, h.lease.upTo+1)); hasPrefix(k, prefix) && n < max; k, v = pc.Next() {
				id := binary.BigEndian.Uint64(k[len(prefix):])
				att, ok := cl.attempts[id]
				if !ok {
					att = attemptsOf(v)
				}
				cands = append(cands, cand{id, int32(i), int32(att)})
				n++
			}
		}
		slices.SortFunc(cands, func(a, b cand) int { return cmp.Compare(a.id, b.id) })
		if max > 0 && len(cands) > max {
			cands = cands[:max]
		} else if max <= 0 {
			cands = nil
		}

		out = make([]storage.QueueItem, 0, len(cands))
		for _, cd := range cands {
			v := c.rows.Get(u64(cd.id))
			if v == nil {
				return fmt.Errorf("row %d in partition index but not in rows: %w", cd.id, errCorrupt)
			}
			it, err := decodeRow(component, cd.id, v)
			if err != nil {
				return err
			}
			it.Attempts = int(cd.att) + 1
			cl.attempts[cd.id] = it.Attempts
			if h := mine[cd.part]; h.lease != nil && cd.id > h.lease.upTo {
				h.lease.upTo = cd.id
			}
			out = append(out, it)
		}
		for _, h := range mine {
			if h.lease != nil {
				h.lease.expiry = expiry
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Ack deletes the rows; IDs that are not (or no longer) queued are ignored.
func (q queue) Ack(ctx context.Context, component string, ids []int64) error {
	if len(ids) == 0 {
		return q.s.check(ctx)
	}
	err := q.s.update(ctx, "ack "+component, func(tx *bolt.Tx) error {
		c, err := openComp(tx, component, false)
		if err != nil || c == nil {
			return err
		}
		for _, id := range ids {
			key := u64(uint64(id))
			v := c.rows.Get(key)
			if v == nil {
				continue
			}
			sender, n, err := rowSender(v)
			if err != nil {
				return fmt.Errorf("row %d: %w", id, err)
			}
			pk := idKey(string(sender), uint64(id))
			if err := c.rows.Delete(key); err != nil {
				return err
			}
			if err := c.parts.Delete(pk); err != nil {
				return err
			}
			c.nRows--
			c.nBytes -= int64(n)
		}
		return c.saveCounters()
	})
	if err == nil {
		gone := make([]uint64, len(ids))
		for i, id := range ids {
			gone[i] = uint64(id)
		}
		q.s.book.forget(component, gone)
	}
	return err
}

// Release deletes owner's leases on component and wakes its subscribers:
// the unacked rows are up for grabs.
func (q queue) Release(ctx context.Context, component, owner string) error {
	return q.release(ctx, component, func(o string) bool { return o == owner })
}

func (q queue) ReleasePrefix(ctx context.Context, component, prefix string) error {
	return q.release(ctx, component, hasOwnerPrefix(prefix))
}

// release drops the leases of the owners that match.
func (q queue) release(ctx context.Context, component string, match func(owner string) bool) error {
	if err := q.s.check(ctx); err != nil {
		return wrap("release "+component, err)
	}
	if q.s.book.release(component, match) {
		q.s.subs.notify(component)
	}
	return nil
}

// Subscribe registers an in-process subscriber: a single node owns the file,
// so every commit that can wake it happens in this process.
func (q queue) Subscribe(component string) (<-chan struct{}, func()) {
	return q.s.subs.subscribe(component)
}
