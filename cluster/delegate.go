package cluster

import (
	"encoding/binary"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// delegate is memberlist's Delegate: node metadata and the push/pull state
// that carries the session-directory digest. Its methods run on memberlist
// goroutines and never block: state merging is queued to the events
// goroutine.
type delegate struct{ c *Cluster }

var _ memberlist.Delegate = (*delegate)(nil)

// gossipType is the first byte of everything this package puts into
// memberlist (push/pull state, user messages).
type gossipType byte

const (
	gossipDigest gossipType = 1 // directory digest (push/pull state)
)

func (t gossipType) String() string {
	switch t {
	case gossipDigest:
		return "digest"
	}
	return fmt.Sprintf("gossip(%d)", byte(t))
}

const digestVersion = 1

// NodeMeta returns the encoded addresses and load. New validated the size;
// should it still not fit, no metadata is sent rather than panicking
// memberlist.
func (d *delegate) NodeMeta(limit int) []byte {
	b := d.c.metaBytes()
	if len(b) > limit {
		d.c.log.Error().Int("bytes", len(b)).Int("limit", limit).Msg("node metadata too large; not advertised")
		return nil
	}
	return b
}

// NotifyMsg receives memberlist user messages; this package sends none (its
// traffic uses links), so they are logged and dropped.
func (d *delegate) NotifyMsg(b []byte) {
	if len(b) == 0 {
		return
	}
	d.c.log.Debug().Stringer("type", gossipType(b[0])).Int("bytes", len(b)).Msg("unexpected gossip message dropped")
}

// GetBroadcasts returns nothing: directory deltas travel on links because
// memberlist broadcasts lose messages.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState returns the digest: type, version, sender name, the digest of
// our own sessions, then our view of every other owner.
func (d *delegate) LocalState(join bool) []byte { return d.c.localState() }

// MergeRemoteState queues a peer's digest for the events goroutine.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	if len(buf) == 0 {
		return
	}
	d.c.work.push(workItem{kind: workState, state: append([]byte(nil), buf...)})
}

func (c *Cluster) localState() []byte {
	c.localMu.Lock()
	own := digest{Owner: c.cfg.NodeName, Count: uint64(len(c.local)), Hash: c.localHash, Max: c.localMax}
	c.localMu.Unlock()
	views := c.dir.digests()
	b := make([]byte, 0, 64+len(views)*48)
	b = append(b, byte(gossipDigest), digestVersion)
	b = binary.AppendUvarint(b, uint64(len(views)+1))
	b = appendDigest(b, own) // first: the sender's own
	for _, v := range views {
		b = appendDigest(b, v)
	}
	return b
}

func appendDigest(b []byte, d digest) []byte {
	b = appendString(b, d.Owner)
	b = binary.AppendUvarint(b, d.Count)
	b = binary.BigEndian.AppendUint64(b, d.Hash)
	return binary.AppendUvarint(b, d.Max)
}

// decodeState parses localState's output; the first digest is the sender's.
func decodeState(b []byte) ([]digest, error) {
	r := reader{b: b}
	if t := gossipType(r.byte()); t != gossipDigest {
		return nil, fmt.Errorf("state type %s unsupported", t)
	}
	if v := r.byte(); v != digestVersion {
		return nil, fmt.Errorf("digest version %d unsupported", v)
	}
	n := r.uvarint()
	if n > uint64(len(b)) {
		return nil, fmt.Errorf("digest count %d exceeds state", n)
	}
	out := make([]digest, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		d := digest{Owner: r.string(), Count: r.uvarint(), Hash: r.uint64(), Max: r.uvarint()}
		out = append(out, d)
	}
	if r.err != nil {
		return nil, fmt.Errorf("decode digest: %w", r.err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("digest has no sender")
	}
	return out, nil
}
