package cluster

import (
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// merger is memberlist's MergeDelegate and ConflictDelegate: it refuses to
// merge with members that carry metadata this version cannot read, and
// logs name conflicts. Directory digest merging (mergeState) lives here too.
type merger struct{ c *Cluster }

var (
	_ memberlist.MergeDelegate    = (*merger)(nil)
	_ memberlist.ConflictDelegate = (*merger)(nil)
)

// NotifyMerge accepts a merge unless a peer's metadata is unreadable.
func (m *merger) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if len(p.Meta) == 0 {
			continue
		}
		if _, _, _, err := decodeMeta(p.Meta); err != nil {
			m.c.log.Warn().Err(err).Str("peer", p.Name).Msg("refusing merge")
			return fmt.Errorf("cluster: peer %s: %w", p.Name, err)
		}
	}
	return nil
}

// NotifyConflict logs two members claiming one name.
func (m *merger) NotifyConflict(existing, other *memberlist.Node) {
	m.c.log.Error().Str("peer", existing.Name).Str("addr", existing.Address()).
		Str("other", other.Address()).Msg("node name conflict: names must be unique")
}

// pendingCheck waits for in-flight deltas before asking for a snapshot.
type pendingCheck struct {
	want     uint64 // owner's max version we should reach
	deadline time.Time
}

// mergeState compares a peer's digest with our views. Runs on the events
// goroutine.
//
// For each owner: our max version above theirs means we are newer; equal max
// with different count or hash means divergence (request a snapshot now);
// a lower max may be deltas in flight, so recheck after repairGrace.
func (c *Cluster) mergeState(buf []byte) {
	ds, err := decodeState(buf)
	if err != nil {
		c.log.Warn().Err(err).Msg("bad push/pull state dropped")
		return
	}
	now := time.Now()
	for _, r := range ds {
		if r.Owner == c.cfg.NodeName || !c.isAlive(r.Owner) {
			continue
		}
		mine, _ := c.dir.digestOf(r.Owner)
		switch {
		case mine.Max > r.Max:
		case mine.Max == r.Max:
			if mine.Count != r.Count || mine.Hash != r.Hash {
				c.requestSnapshot(r.Owner, "digest differs")
			}
		default:
			p, ok := c.pending[r.Owner]
			if !ok {
				p.deadline = now.Add(c.repairGrace)
			}
			p.want = max(p.want, r.Max)
			c.pending[r.Owner] = p
		}
	}
}

// checkPending requests snapshots for owners whose deltas never arrived.
func (c *Cluster) checkPending(now time.Time) {
	for owner, p := range c.pending {
		mine, _ := c.dir.digestOf(owner)
		switch {
		case mine.Max >= p.want:
			delete(c.pending, owner)
		case now.After(p.deadline):
			delete(c.pending, owner)
			c.requestSnapshot(owner, "deltas missing")
		}
	}
}

// requestSnapshot asks owner for its snapshot over the link, at most once
// a second per owner. Without a link nothing is sent: the next link up
// brings a snapshot anyway.
func (c *Cluster) requestSnapshot(owner, why string) {
	now := time.Now()
	if now.Sub(c.lastReq[owner]) < time.Second {
		return
	}
	c.mu.RLock()
	l := c.links[owner]
	c.mu.RUnlock()
	if l == nil {
		return
	}
	c.lastReq[owner] = now
	if err := l.enqueue(outFrame{typ: frameSnapshotRequest}); err != nil {
		c.log.Debug().Err(err).Str("peer", owner).Msg("snapshot request not queued")
		return
	}
	c.log.Info().Str("peer", owner).Str("reason", why).Msg("directory repair: snapshot requested")
}
