package cluster

import (
	"encoding/binary"
	"errors"
	"time"
)

// nextVersion returns a new version: wall-clock nanoseconds, but always
// above every version issued or observed before.
func (c *Cluster) nextVersion() uint64 {
	now := uint64(time.Now().UnixNano())
	for {
		cur := c.clock.Load()
		n := max(cur+1, now)
		if c.clock.CompareAndSwap(cur, n) {
			return n
		}
	}
}

// observe moves the clock past a version seen from another node.
func (c *Cluster) observe(v uint64) {
	for {
		cur := c.clock.Load()
		if v <= cur || c.clock.CompareAndSwap(cur, v) {
			return
		}
	}
}

// UpsertLocal records a local session that was bound or changed presence and
// sends the delta to every peer. It sets s.Node and s.Version. It never
// blocks on the network.
func (c *Cluster) UpsertLocal(s Session) {
	s.Node = c.cfg.NodeName
	s.Deleted = false
	c.localMu.Lock()
	defer c.localMu.Unlock()
	s.Version = c.nextVersion()
	if old, ok := c.local[s.JID]; ok {
		c.localHash ^= entryHash(old.JID, old.Version)
	}
	c.local[s.JID] = s
	c.localHash ^= entryHash(s.JID, s.Version)
	c.localMax = s.Version
	c.sendDelta(s)
}

// RemoveLocal removes a local session and sends a tombstone to every peer.
func (c *Cluster) RemoveLocal(fullJID string) {
	c.localMu.Lock()
	defer c.localMu.Unlock()
	if !c.dropLocalLocked(fullJID) {
		return
	}
	t := Session{JID: fullJID, Node: c.cfg.NodeName, Version: c.nextVersion(), Deleted: true}
	c.localMax = t.Version
	c.sendDelta(t)
}

// ForgetLocal drops a local entry that a newer entry of another node
// replaced (a conflict: the session moved or was bound again there)
// without sending a tombstone: a tombstone could reach a third node before
// the newer entry and leave it, for a moment, with no session at all.
// Lookups prefer the newer entry meanwhile, and the next digest exchange
// removes the old one everywhere (its owner's snapshot lacks it).
func (c *Cluster) ForgetLocal(fullJID string) {
	c.localMu.Lock()
	defer c.localMu.Unlock()
	c.dropLocalLocked(fullJID)
}

// dropLocalLocked removes a local entry from the table and its digest; it
// reports whether there was one. Called with localMu held.
func (c *Cluster) dropLocalLocked(fullJID string) bool {
	old, ok := c.local[fullJID]
	if !ok {
		return false
	}
	delete(c.local, fullJID)
	c.localHash ^= entryHash(old.JID, old.Version)
	return true
}

// sendDelta queues s on every link; called with localMu held so that deltas
// and snapshots are ordered. A full queue makes the link resend a snapshot.
func (c *Cluster) sendDelta(s Session) {
	if c.dropDeltas.Load() {
		return
	}
	body := binary.AppendUvarint(make([]byte, 0, 64+len(s.JID)+len(s.Status)), 1)
	body = appendSession(body, s)
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, l := range c.links {
		if err := l.enqueue(outFrame{typ: frameDelta, body: body}); errors.Is(err, ErrQueueFull) {
			l.requestResync()
		}
	}
}

// snapshotFrame encodes our own sessions: uvarint clock (every version up to
// it is covered), uvarint newest issued version, uvarint count, entries.
func (c *Cluster) snapshotFrame() []byte {
	c.localMu.Lock()
	defer c.localMu.Unlock()
	b := make([]byte, 0, 32+len(c.local)*48)
	b = binary.AppendUvarint(b, c.clock.Load())
	b = binary.AppendUvarint(b, c.localMax)
	b = binary.AppendUvarint(b, uint64(len(c.local)))
	for _, s := range c.local {
		b = appendSession(b, s)
	}
	return b
}

// Lookup returns the live remote sessions of a bare JID (local sessions
// are not included).
func (c *Cluster) Lookup(bare string) []Session { return c.dir.lookup(bare) }

// LookupFull returns the live remote session of a full JID.
func (c *Cluster) LookupFull(full string) (Session, bool) { return c.dir.lookupFull(full) }

// DirectorySize returns the number of live sessions this node knows of,
// its own included.
func (c *Cluster) DirectorySize() int {
	c.localMu.Lock()
	n := len(c.local)
	c.localMu.Unlock()
	return n + c.dir.size()
}

// Route queues stanza for the node that holds target to. It never blocks:
// it returns ErrUnknownNode, ErrLinkDown or ErrQueueFull (wrapped) when the
// stanza cannot be queued. A nil return means the stanza is sent or, if
