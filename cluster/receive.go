package cluster

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

func (c *Cluster) readLoop(l *link) {
	defer close(l.readerDone)
	defer l.close()
	r := bufio.NewReaderSize(l.conn, 64<<10)
	for {
		t, body, err := readFrame(r)
		if err != nil {
			if !l.isClosed() {
				l.log.Debug().Err(err).Msg("link read")
			}
			return
		}
		if l.isClosed() {
			return // the peer left; do not apply late frames
		}
		if err := c.handleFrame(l, t, body); err != nil {
			l.log.Warn().Err(err).Stringer("frame", t).Msg("bad frame; closing link")
			return
		}
	}
}

func (c *Cluster) handleFrame(l *link, t frameType, body []byte) error {
	switch t {
	case frameDelta:
		r := reader{b: body}
		n := r.uvarint()
		if n > uint64(len(body)) {
			return errors.New("delta count exceeds frame")
		}
		ss := make([]Session, 0, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			ss = append(ss, r.session(l.peer))
		}
		if r.err != nil {
			return fmt.Errorf("decode delta: %w", r.err)
		}
		for _, s := range ss {
			c.observe(s.Version)
		}
		up, gone := c.dir.applyDelta(l.peer, ss, time.Now())
		c.notify(up, gone)
	case frameSnapshot:
		r := reader{b: body}
		floor, maxV, n := r.uvarint(), r.uvarint(), r.uvarint()
		if n > uint64(len(body)) {
			return errors.New("snapshot count exceeds frame")
		}
		ss := make([]Session, 0, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			ss = append(ss, r.session(l.peer))
		}
		if r.err != nil {
			return fmt.Errorf("decode snapshot: %w", r.err)
		}
		c.observe(floor)
		up, gone := c.dir.applySnapshot(l.peer, floor, maxV, ss)
		l.log.Debug().Int("entries", len(ss)).Int("bytes", len(body)).Msg("snapshot applied")
		c.notify(up, gone)
	case frameSnapshotRequest:
		l.requestResync()
	case frameStanza:
		r := reader{b: body}
		to := r.string()
		if r.err != nil {
			return fmt.Errorf("decode stanza: %w", r.err)
		}
		c.h.Stanzas.HandleStanza(to, r.b)
	case frameStanzaAcked:
		r := reader{b: body}
		seq := r.uvarint()
		to := r.string()
		if r.err != nil {
			return fmt.Errorf("decode stanza: %w", r.err)
		}
		c.h.Stanzas.HandleStanzaAcked(to, r.b, l.receipt(seq))
	case frameControl:
		r := reader{b: body}
		kind := r.byte()
		if r.err != nil {
			return fmt.Errorf("decode control message: %w", r.err)
		}
		c.h.Control.HandleControl(l.peer, kind, r.b, func() {})
	case frameControlAcked:
		r := reader{b: body}
		seq := r.uvarint()
		kind := r.byte()
		if r.err != nil {
			return fmt.Errorf("decode control message: %w", r.err)
		}
		c.h.Control.HandleControl(l.peer, kind, r.b, l.receipt(seq))
	case frameAck:
		r := reader{b: body}
		seq := r.uvarint()
		if r.err != nil {
			return fmt.Errorf("decode ack: %w", r.err)
		}
		l.acked(seq)
	default:
		l.log.Warn().Stringer("frame", t).Msg("unknown frame type dropped")
	}
	return nil
}

// notify checks conflicts with local sessions and calls the handler.
func (c *Cluster) notify(updated, gone []Session) {
	var conflicts []string
	if len(updated) > 0 {
		c.localMu.Lock()
		for _, u := range updated {
			ls, ok := c.local[u.JID]
			if !ok || ls.Version >= u.Version {
				continue
			}
			// The newer entry replaces ours: drop it here, under the same
			// lock that saw it older (a session bound again meanwhile
			// keeps its newer entry), without a tombstone (ForgetLocal).
			c.dropLocalLocked(u.JID)
			conflicts = append(conflicts, u.JID)
		}
		c.localMu.Unlock()
	}
	if len(gone) > 0 {
		c.h.Directory.HandleSessionsGone(gone)
	}
	for _, u := range updated {
		c.h.Directory.HandleSessionUpdate(u)
	}
	for _, j := range conflicts {
		c.log.Info().Str("jid", j).Msg("resource conflict: a later bind on another node wins")
		c.h.Directory.HandleConflict(j)
	}
}

// receipt returns the function that acks frame seq to the peer. A failed
// enqueue means the link is gone: the sender then fails the receipt and
// falls back (at-least-once).
func (l *link) receipt(seq uint64) func() {
	return func() { _ = l.enqueue(outFrame{typ: frameAck, body: binary.AppendUvarint(nil, seq)}) }
}
