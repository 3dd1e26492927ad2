package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"xcollect.dev/xcollect/storage"
)

type users struct{ s *Store }

type rosters struct{ s *Store }

type offline struct{ s *Store }

func (u users) CreateUser(ctx context.Context, user string, cred storage.Credentials) error {
	v, err := json.Marshal(cred)
	if err != nil {
		return fmt.Errorf("embedded: create user %s: %w", user, err)
	}
	// Batched: a bulk import's concurrent creates share fsyncs.
	return u.s.batch(ctx, "create user "+user, func(tx *bolt.Tx) error {
		b := tx.Bucket(bktUsers)
		if b.Get([]byte(user)) != nil {
			return storage.ErrExists
		}
		if err := b.Put([]byte(user), v); err != nil {
			return err
		}
		return tx.Bucket(bktDomains).Put(joinKey(domainOf(user), []byte(user)), nil)
	})
}

func (u users) SetCredentials(ctx context.Context, user string, cred storage.Credentials) error {
	v, err := json.Marshal(cred)
	if err != nil {
		return fmt.Errorf("embedded: set credentials %s: %w", user, err)
	}
	return u.s.update(ctx, "set credentials "+user, func(tx *bolt.Tx) error {
		b := tx.Bucket(bktUsers)
		if b.Get([]byte(user)) == nil {
			return storage.ErrNotFound
		}
		return b.Put([]byte(user), v)
	})
}

func (u users) GetCredentials(ctx context.Context, user string) (storage.Credentials, error) {
	var cred storage.Credentials
	err := u.s.view(ctx, "get credentials "+user, func(tx *bolt.Tx) error {
		v := tx.Bucket(bktUsers).Get([]byte(user))
		if v == nil {
			return storage.ErrNotFound
		}
		return json.Unmarshal(v, &cred)
	})
	return cred, err
}

func (u users) DeleteUser(ctx context.Context, user string) error {
	return u.s.update(ctx, "delete user "+user, func(tx *bolt.Tx) error {
		b := tx.Bucket(bktUsers)
		if b.Get([]byte(user)) == nil {
			return storage.ErrNotFound
		}
		if err := b.Delete([]byte(user)); err != nil {
			return err
		}
		if err := tx.Bucket(bktDomains).Delete(joinKey(domainOf(user), []byte(user))); err != nil {
			return err
		}
		if err := deletePrefix(tx.Bucket(bktRosters), prefixKey(user)); err != nil {
			return err
		}
		_, err := deleteOffline(tx, user, ^uint64(0))
		return err
	})
}

func (u users) ListUsers(ctx context.Context, domain string) ([]string, error) {
	var out []string
	err := u.s.view(ctx, "list users "+domain, func(tx *bolt.Tx) error {
		prefix := prefixKey(domain)
		c := tx.Bucket(bktDomains).Cursor()
		for k, _ := c.Seek(prefix); hasPrefix(k, prefix); k, _ = c.Next() {
			out = append(out, string(k[len(prefix):]))
		}
		return nil
	})
	return out, err
}

// deletePrefix deletes every key of b that starts with prefix.
func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); hasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func (r rosters) GetRoster(ctx context.Context, owner string) ([]storage.RosterItem, error) {
	var out []storage.RosterItem
	err := r.s.view(ctx, "get roster "+owner, func(tx *bolt.Tx) error {
		prefix := prefixKey(owner)
		c := tx.Bucket(bktRosters).Cursor()
		for k, v := c.Seek(prefix); hasPrefix(k, prefix); k, v = c.Next() {
			var it storage.RosterItem
			if err := json.Unmarshal(v, &it); err != nil {
				return fmt.Errorf("item %q: %w", k[len(prefix):], err)
			}
			out = append(out, it)
		}
		return nil
	})
	return out, err
}

func (r rosters) GetRosterItem(ctx context.Context, owner, contact string) (storage.RosterItem, bool, error) {
	var it storage.RosterItem
	var ok bool
	err := r.s.view(ctx, "get roster item "+owner, func(tx *bolt.Tx) error {
		v := tx.Bucket(bktRosters).Get(joinKey(owner, []byte(contact)))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &it)
	})
	return it, ok, err
}

func (r rosters) PutRosterItem(ctx context.Context, owner string, item storage.RosterItem) error {
	v, err := json.Marshal(item)
	if err != nil {
		return fmt.Errorf("embedded: put roster item %s: %w", owner, err)
	}
	return r.s.update(ctx, "put roster item "+owner, func(tx *bolt.Tx) error {
		return tx.Bucket(bktRosters).Put(joinKey(owner, []byte(item.JID)), v)
	})
}

func (r rosters) DeleteRosterItem(ctx context.Context, owner, contact string) error {
	return r.s.update(ctx, "delete roster item "+owner, func(tx *bolt.Tx) error {
		return tx.Bucket(bktRosters).Delete(joinKey(owner, []byte(contact)))
	})
}

// An offline value is the stored time (8 bytes, Unix ns) then the stanza.

func (o offline) StoreOffline(ctx context.Context, to string, stanza []byte, limit int) error {
	return o.s.update(ctx, "store offline "+to, func(tx *bolt.Tx) error {
		counts := tx.Bucket(bktOffCount)
		var n uint64
		if v := counts.Get([]byte(to)); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		if limit > 0 && n >= uint64(limit) {
			return storage.ErrLimit
		}
		b := tx.Bucket(bktOffline)
		id, err := b.NextSequence()
		if err != nil {
			return err
		}
		now := uint64(time.Now().UnixNano())
		v := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(stanza)), now)
		if err := b.Put(idKey(to, id), append(v, stanza...)); err != nil {
			return err
		}
		tk := binary.BigEndian.AppendUint64(u64(now), id)
		if err := tx.Bucket(bktOffTime).Put(tk, []byte(to)); err != nil {
			return err
		}
		return counts.Put([]byte(to), u64(n+1))
	})
}

func (o offline) FetchOffline(ctx context.Context, to string, notBefore time.Time) ([]storage.OfflineMessage, error) {
	var out []storage.OfflineMessage
	err := o.s.view(ctx, "fetch offline "+to, func(tx *bolt.Tx) error {
		prefix := prefixKey(to)
		c := tx.Bucket(bktOffline).Cursor()
		for k, v := c.Seek(prefix); hasPrefix(k, prefix); k, v = c.Next() {
			if len(k) != len(prefix)+8 || len(v) < 8 {
				return fmt.Errorf("corrupt offline entry %q", k)
			}
			stored := unixNano(binary.BigEndian.Uint64(v))
			if stored.Before(notBefore) {
				continue
			}
			out = append(out, storage.OfflineMessage{
				ID:     int64(binary.BigEndian.Uint64(k[len(prefix):])),
				To:     to,
				Stanza: bytes.Clone(v[8:]),
				Stored: stored,
			})
		}
		return nil
	})
	return out, err
}

func (o offline) DeleteOffline(ctx context.Context, to string, upTo int64) error {
	if upTo <= 0 {
		return nil
	}
	return o.s.update(ctx, "delete offline "+to, func(tx *bolt.Tx) error {
		_, err := deleteOffline(tx, to, uint64(upTo))
		return err
	})
}

// deleteOffline deletes to's messages with ID <= upTo and returns how many.
func deleteOffline(tx *bolt.Tx, to string, upTo uint64) (int, error) {
	b, times := tx.Bucket(bktOffline), tx.Bucket(bktOffTime)
	prefix := prefixKey(to)
	var keys, tkeys [][]byte
	c := b.Cursor()
	for k, v := c.Seek(prefix); hasPrefix(k, prefix); k, v = c.Next() {
		id := binary.BigEndian.Uint64(k[len(prefix):])
		if id > upTo {
			break
		}
		keys = append(keys, bytes.Clone(k))
		tkeys = append(tkeys, binary.BigEndian.AppendUint64(bytes.Clone(v[:8]), id))
	}
	for i := range keys {
		if err := b.Delete(keys[i]); err != nil {
			return 0, err
		}
		if err := times.Delete(tkeys[i]); err != nil {
			return 0, err
		}
	}
	return len(keys), addOffCount(tx, to, -len(keys))
}

func addOffCount(tx *bolt.Tx, to string, delta int) error {
	if delta == 0 {
		return nil
	}
	counts := tx.Bucket(bktOffCount)
	var n int64
	if v := counts.Get([]byte(to)); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	n += int64(delta)
	if n <= 0 {
		return counts.Delete([]byte(to))
	}
	return counts.Put([]byte(to), u64(uint64(n)))
}

func (o offline) ExpireOffline(ctx context.Context, before time.Time) (int, error) {
	var n int
	err := o.s.update(ctx, "expire offline", func(tx *bolt.Tx) error {
		b, times := tx.Bucket(bktOffline), tx.Bucket(bktOffTime)
		type victim struct {
			tkey []byte
			to   string
			id   uint64
		}
		var victims []victim
		c := times.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 16 {
				return fmt.Errorf("corrupt offline time key %q", k)
			}
			if !unixNano(binary.BigEndian.Uint64(k)).Before(before) {
				break
			}
			victims = append(victims, victim{bytes.Clone(k), string(v), binary.BigEndian.Uint64(k[8:])})
		}
		perUser := map[string]int{}
		for _, vi := range victims {
			if err := times.Delete(vi.tkey); err != nil {
				return err
			}
			if err := b.Delete(idKey(vi.to, vi.id)); err != nil {
				return err
			}
			perUser[vi.to]--
		}
		for to, d := range perUser {
			if err := addOffCount(tx, to, d); err != nil {
				return err
			}
		}
		n = len(victims)
		return nil
	})
	return n, err
}
