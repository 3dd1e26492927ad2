package embedded

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"xcollect.dev/xcollect/storage"
)

// rowVersion is the first byte of every encoded row.
const rowVersion = 1

// Nested bucket names inside a component's bucket.
var (
	bktRows    = []byte("rows")
	bktParts   = []byte("parts")
	bktLeases  = []byte("leases")
	bktDedupe  = []byte("dedupe")
	bktDedupeT = []byte("dedupet")
	bktDead    = []byte("dead")
	bktMeta    = []byte("meta")

	metaRows  = []byte("rows")
	metaBytes = []byte("bytes")
	metaDead  = []byte("dead")
)

var errCorrupt = errors.New("corrupt record")

// encodeRow encodes it without ID and Component (they are the key and the
// bucket): version, enqueued (8 bytes Unix ns), attempts, sender, from,
// stanza id, reason, then the stanza to the end.
func encodeRow(it *storage.QueueItem) []byte {
	n := 1 + 8 + 5*binary.MaxVarintLen64 + len(it.Sender) + len(it.From) + len(it.StanzaID) + len(it.Reason) + len(it.Stanza)
	b := make([]byte, 0, n)
	b = append(b, rowVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(it.Enqueued.UnixNano()))
	b = binary.AppendUvarint(b, uint64(it.Attempts))
	for _, s := range []string{it.Sender, it.From, it.StanzaID, it.Reason} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return append(b, it.Stanza...)
}

// decodeRow decodes v, copying everything out of bbolt's memory.
func decodeRow(component string, id uint64, v []byte) (storage.QueueItem, error) {
	it := storage.QueueItem{ID: int64(id), Component: component}
	if len(v) < 9 || v[0] != rowVersion {
		return it, fmt.Errorf("row %d: %w", id, errCorrupt)
	}
	it.Enqueued = unixNano(binary.BigEndian.Uint64(v[1:9]))
	v = v[9:]
	a, n := binary.Uvarint(v)
	if n <= 0 {
		return it, fmt.Errorf("row %d: %w", id, errCorrupt)
	}
	it.Attempts = int(a)
	v = v[n:]
	for _, dst := range []*string{&it.Sender, &it.From, &it.StanzaID, &it.Reason} {
		l, n := binary.Uvarint(v)
		if n <= 0 || uint64(len(v)-n) < l {
			return it, fmt.Errorf("row %d: %w", id, errCorrupt)
		}
		*dst = string(v[n : n+int(l)])
		v = v[n+int(l):]
	}
	it.Stanza = bytes.Clone(v)
	if it.Stanza == nil {
		it.Stanza = []byte{}
	}
	return it, nil
}

// rowSender returns the sender and stanza length of an encoded row without
// copying the rest.
func rowSender(v []byte) (sender []byte, stanzaLen int, err error) {
	if len(v) < 9 || v[0] != rowVersion {
		return nil, 0, errCorrupt
	}
	v = v[9:]
	_, n := binary.Uvarint(v)
	if n <= 0 {
		return nil, 0, errCorrupt
	}
	v = v[n:]
	for i := range 4 {
		l, n := binary.Uvarint(v)
		if n <= 0 || uint64(len(v)-n) < l {
			return nil, 0, errCorrupt
		}
		if i == 0 {
			sender = v[n : n+int(l)]
		}
		v = v[n+int(l):]
	}
	return sender, len(v), nil
}

// A lease on a partition (kept in memory, leases.go): expiry (Unix ns),
// the highest row id handed to the owner, the owner.
type lease struct {
	expiry int64
	upTo   uint64
	owner  string
}

// comp is one component's buckets and counters inside one write transaction.
type comp struct {
	name                                             string
	rows, parts, leases, dedupe, dedupeT, dead, meta *bolt.Bucket
	nRows, nBytes, nDead                             int64
}

// openComp returns component's buckets, creating them when create is set;
// nil when they do not exist and create is false.
func openComp(tx *bolt.Tx, component string, create bool) (*comp, error) {
	q := tx.Bucket(bktQueue)
	b := q.Bucket([]byte(component))
	if b == nil {
		if !create {
			return nil, nil
		}
		if component == "" {
			return nil, errors.New("empty component")
		}
		var err error
		if b, err = q.CreateBucket([]byte(component)); err != nil {
			return nil, fmt.Errorf("component %s: %w", component, err)
		}
		for _, name := range [][]byte{bktRows, bktParts, bktLeases, bktDedupe, bktDedupeT, bktDead, bktMeta} {
			if _, err := b.CreateBucket(name); err != nil {
				return nil, fmt.Errorf("component %s: bucket %s: %w", component, name, err)
			}
		}
	}
	c := &comp{
		name:    component,
		rows:    b.Bucket(bktRows),
		parts:   b.Bucket(bktParts),
		leases:  b.Bucket(bktLeases),
		dedupe:  b.Bucket(bktDedupe),
		dedupeT: b.Bucket(bktDedupeT),
		dead:    b.Bucket(bktDead),
		meta:    b.Bucket(bktMeta),
	}
	if c.rows == nil || c.parts == nil || c.leases == nil || c.dedupe == nil || c.dedupeT == nil || c.dead == nil || c.meta == nil {
		return nil, fmt.Errorf("component %s: %w: missing bucket", component, errCorrupt)
	}
	c.nRows = c.counter(metaRows)
	c.nBytes = c.counter(metaBytes)
	c.nDead = c.counter(metaDead)
	return c, nil
}

func (c *comp) counter(name []byte) int64 {
	if v := c.meta.Get(name); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

// saveCounters writes the counters back; call it once before the commit.
func (c *comp) saveCounters() error {
	for _, kv := range []struct {
		k []byte
		v int64
	}{{metaRows, c.nRows}, {metaBytes, c.nBytes}, {metaDead, c.nDead}} {
		if kv.v != c.counter(kv.k) {
			if err := c.meta.Put(kv.k, u64(uint64(kv.v))); err != nil {
				return err
			}
		}
	}
	return nil
}

// putRow adds a live row with its partition entry.
func (c *comp) putRow(id uint64, it *storage.QueueItem) error {
	if err := c.rows.Put(u64(id), encodeRow(it)); err != nil {
		return err
	}
	if err := c.parts.Put(idKey(it.Sender, id), attemptsValue(it.Attempts)); err != nil {
		return err
	}
	c.nRows++
	c.nBytes += int64(len(it.Stanza))
	return nil
}

// deleteRow removes the live row id and returns it; ok is false when absent.
func (c *comp) deleteRow(id uint64) (it storage.QueueItem, ok bool, err error) {
	key := u64(id)
	v := c.rows.Get(key)
	if v == nil {
		return it, false, nil
	}
	it, err = decodeRow(c.name, id, v)
	if err != nil {
		return it, false, err
	}
	pk := idKey(it.Sender, id)
	it.Attempts = attemptsOf(c.parts.Get(pk))
	if err := c.rows.Delete(key); err != nil {
		return it, false, err
	}
	if err := c.parts.Delete(pk); err != nil {
		return it, false, err
	}
	c.nRows--
	c.nBytes -= int64(len(it.Stanza))
	return it, true, nil
}

func attemptsValue(n int) []byte {
	return binary.BigEndian.AppendUint32(make([]byte, 0, 4), uint32(n))
}

func attemptsOf(v []byte) int {
	if len(v) != 4 {
		return 0
	}
	return int(binary.BigEndian.Uint32(v))
}

func timeKey(t time.Time, rest []byte) []byte {
	k := make([]byte, 0, 8+len(rest))
	k = binary.BigEndian.AppendUint64(k, uint64(t.UnixNano()))
	return append(k, rest...)
}
