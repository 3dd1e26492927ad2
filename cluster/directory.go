package cluster

import (
	"encoding/binary"
	"hash/fnv"
	"strings"
	"sync"
	"time"
)

// Session is one entry of the cluster-wide session directory.
type Session struct {
	JID       string // full JID (normalized by the caller)
	Node      string // owning node name
	Available bool   // available presence sent
	Show      string // away, chat, dnd, xa or empty
	Status    string // status text
	Priority  int    // presence priority
	// Version orders updates of one entry: newest wins. The owner assigns it
	// from a hybrid logical clock (wall-clock nanoseconds, bumped past every
	// version it has seen), so a restarted node's entries beat its stale ones
	// and a later bind of the same full JID on another node beats the older.
	Version uint64
	Deleted bool // tombstone
}

// Bare returns the bare JID of s.JID.
func (s Session) Bare() string { return bareJID(s.JID) }

// bareJID strips the resource: the first '/' separates it, since neither
// localpart nor domainpart may contain one.
func bareJID(full string) string {
	if i := strings.IndexByte(full, '/'); i >= 0 {
		return full[:i]
	}
	return full
}

// entryHash is an order-independent digest contribution of one live entry.
func entryHash(jid string, version uint64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(jid)) //nolint:errcheck // hash.Hash never fails
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], version)
	h.Write(v[:]) //nolint:errcheck // hash.Hash never fails
	x := h.Sum64()
	// splitmix64 finalizer spreads FNV's weak high bits.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// digest summarizes one owner's sessions: live count, XOR of entryHash over
// live entries, and the newest version the owner issued (tombstones
// included). Two views with equal max versions must have equal count and
// hash; a lower max means missed deltas.
type digest struct {
	Owner string
	Count uint64
	Hash  uint64
	Max   uint64
}

type entry struct {
	Session
	deletedAt time.Time // tombstones only: when to forget them
}

// ownerView is this node's copy of one remote owner's sessions.
type ownerView struct {
	entries map[string]*entry // full JID -> entry, tombstones included
	live    int
	hash    uint64
	max     uint64
	floor   uint64 // the last snapshot covers every version <= floor
}

type ownerKey struct{ owner, full string }

// directory holds remote nodes' sessions, indexed by owner and by bare JID.
// Safe for concurrent use.
type directory struct {
	mu     sync.RWMutex
	owners map[string]*ownerView
	bare   map[string]map[ownerKey]struct{} // live entries only
}

func newDirectory() *directory {
	return &directory{owners: map[string]*ownerView{}, bare: map[string]map[ownerKey]struct{}{}}
}

func (d *directory) view(owner string) *ownerView {
	v := d.owners[owner]
	if v == nil {
		v = &ownerView{entries: map[string]*entry{}}
		d.owners[owner] = v
	}
	return v
}

// addLive and delLive keep counters and the bare index; called with d.mu held.
func (d *directory) addLive(v *ownerView, owner string, e *entry) {
	v.live++
	v.hash ^= entryHash(e.JID, e.Version)
	b := bareJID(e.JID)
	set := d.bare[b]
	if set == nil {
		set = map[ownerKey]struct{}{}
		d.bare[b] = set
	}
	set[ownerKey{owner, e.JID}] = struct{}{}
}

func (d *directory) delLive(v *ownerView, owner string, e *entry) {
	v.live--
	v.hash ^= entryHash(e.JID, e.Version)
	b := bareJID(e.JID)
	if set := d.bare[b]; set != nil {
		delete(set, ownerKey{owner, e.JID})
		if len(set) == 0 {
			delete(d.bare, b)
		}
	}
}

// applyDelta merges entries sent by their owner. It returns the entries that
// became live or changed and the entries removed by tombstones.
func (d *directory) applyDelta(owner string, ss []Session, now time.Time) (updated, gone []Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.view(owner)
	for _, s := range ss {
		s.Node = owner
		if s.Version <= v.floor {
			continue // already covered by a newer snapshot
		}
		cur := v.entries[s.JID]
		if cur != nil && cur.Version >= s.Version {
			continue // stale
		}
		v.max = max(v.max, s.Version)
		wasLive := cur != nil && !cur.Deleted
		if wasLive {
			d.delLive(v, owner, cur)
		}
		if s.Deleted {
			if wasLive {
				g := cur.Session
				g.Deleted, g.Version = true, s.Version
				gone = append(gone, g)
			}
			v.entries[s.JID] = &entry{Session: s, deletedAt: now}
			continue
		}
		e := &entry{Session: s}
		v.entries[s.JID] = e
		d.addLive(v, owner, e)
		updated = append(updated, s)
	}
	return updated, gone
}

// applySnapshot replaces owner's entries with ss, the owner's complete list
// of live sessions at its clock value floor; maxV is the newest version the
// owner had issued. Entries missing from ss are gone.
func (d *directory) applySnapshot(owner string, floor, maxV uint64, ss []Session) (updated, gone []Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.owners[owner]
	v := &ownerView{entries: make(map[string]*entry, len(ss)), floor: floor, max: maxV}
	if old != nil {
		for _, e := range old.entries {
			if !e.Deleted {
				d.delLive(old, owner, e)
			}
		}
	}
	d.owners[owner] = v
	for _, s := range ss {
		if s.Deleted {
			continue
		}
		s.Node = owner
		e := &entry{Session: s}
		v.entries[s.JID] = e
		d.addLive(v, owner, e)
		if old != nil {
			if o := old.entries[s.JID]; o != nil && !o.Deleted && o.Session == s {
				continue // unchanged
			}
		}
		updated = append(updated, s)
	}
	if old != nil {
		for jid, e := range old.entries {
			if e.Deleted {
				continue
			}
			if _, ok := v.entries[jid]; !ok {
				g := e.Session
				g.Deleted = true
				gone = append(gone, g)
			}
		}
	}
	return updated, gone
}

// dropOwner forgets every entry of owner and returns the live ones.
func (d *directory) dropOwner(owner string) (gone []Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.owners[owner]
	if v == nil {
		return nil
	}
	for _, e := range v.entries {
		if !e.Deleted {
			d.delLive(v, owner, e)
			g := e.Session
			g.Deleted = true
			gone = append(gone, g)
		}
	}
	delete(d.owners, owner)
	return gone
}

// gc forgets tombstones older than cutoff.
func (d *directory) gc(cutoff time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range d.owners {
		for jid, e := range v.entries {
			if e.Deleted && e.deletedAt.Before(cutoff) {
				delete(v.entries, jid)
			}
		}
	}
}

// lookup returns live entries of bare, one per full JID (the newest if two
// nodes briefly both hold it).
func (d *directory) lookup(bare string) []Session {
	d.mu.RLock()
	defer d.mu.RUnlock()
	set := d.bare[bare]
	if len(set) == 0 {
		return nil
	}
	out := make([]Session, 0, len(set))
	idx := make(map[string]int, len(set))
	for k := range set {
		e := d.owners[k.owner].entries[k.full]
		if i, ok := idx[k.full]; ok {
			if e.Version > out[i].Version {
				out[i] = e.Session
			}
			continue
		}
		idx[k.full] = len(out)
		out = append(out, e.Session)
	}
	return out
}

func (d *directory) lookupFull(full string) (Session, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	var best Session
	found := false
	for k := range d.bare[bareJID(full)] {
		if k.full != full {
			continue
		}
		e := d.owners[k.owner].entries[k.full]
		if !found || e.Version > best.Version {
			best, found = e.Session, true
		}
	}
	return best, found
}

func (d *directory) size() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := 0
	for _, v := range d.owners {
		n += v.live
	}
	return n
}

func (d *directory) digests() []digest {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]digest, 0, len(d.owners))
	for o, v := range d.owners {
		out = append(out, digest{Owner: o, Count: uint64(v.live), Hash: v.hash, Max: v.max})
	}
	return out
}

func (d *directory) digestOf(owner string) (digest, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	v := d.owners[owner]
	if v == nil {
		return digest{Owner: owner}, false
	}
	return digest{Owner: owner, Count: uint64(v.live), Hash: v.hash, Max: v.max}, true
}
