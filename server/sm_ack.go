package server

// XEP-0198 stream management on one stream: <enable/>, the inbound
// handled count and <a/>/<r/>, the outbound count and the unacknowledged
// stanzas.

import (
	"strconv"
	"sync"
	"time"

	"xcollect.dev/xcollect/internal/wire"
)

// smState is a session's XEP-0198 stream management state. Guarded by the
// session's mu. Counters wrap at 2^32 as the XEP requires.
type smState struct {
	id        string
	resumable bool
	// inbound: stanzas received since <enable/>, and how many of them are
	// handled (durable, delivered or answered) as a contiguous prefix.
	inRecv  uint32
	inH     uint32
	pending []bool // completion of stanzas inH+1 … inRecv
	ackAt   uint32 // an <r/> waits until inH reaches this
	ackWant bool
	ackSent uint32 // the highest h answered so far (ackOut: any)
	ackOut  bool
	// an answer waiting for the standby's copy of the count (sm_standby_owner.go)
	inFlight bool
	inWait   bool // another answer, with inNext, follows the one in flight
	inNext   uint32
	// outbound: stanzas written since <enable/> and those not yet acked.
	outSent  uint32
	counting bool // set once <enabled/> is written: stanzas before it are not counted
	unacked  []smItem
	rPending bool
	timer    *time.Timer // resumption timeout while detached
	// standby is the copy of this state on a standby node (cluster;
	// sm_standby_owner.go).
	standby standbyCopyState
}

type smItem struct {
	seq uint32
	b   []byte
}

// before reports a < b in 2^32 serial arithmetic.
func before(a, b uint32) bool { return int32(a-b) < 0 }

// countInbound registers an inbound stanza and returns the function that marks it
// handled. Without XEP-0198 it returns noop.
func (s *Session) countInbound() func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	sm := s.sm
	if sm == nil {
		return noop
	}
	sm.inRecv++
	seq := sm.inRecv
	sm.pending = append(sm.pending, false)
	var once sync.Once
	return func() { once.Do(func() { s.handled(sm, seq) }) }
}

// handled marks inbound stanza seq handled and answers a waiting <r/>.
func (s *Session) handled(sm *smState, seq uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sm != sm {
		return
	}
	i := int(seq - sm.inH - 1)
	if i < 0 || i >= len(sm.pending) {
		return
	}
	sm.pending[i] = true
	n := 0
	for n < len(sm.pending) && sm.pending[n] {
		n++
	}
	if n == 0 {
		return
	}
	sm.inH += uint32(n)
	sm.pending = append(sm.pending[:0], sm.pending[n:]...)
	if sm.ackWant && !before(sm.inH, sm.ackAt) {
		sm.ackWant = false
		s.queueAckLocked(sm.inH)
	}
}

// handleSM processes a stream management element; false ends the stream.
func (s *Session) handleSM(el *wire.Element) bool {
	switch el.Name.Local {
	case "enable":
		s.mu.Lock()
		if s.sm != nil {
			s.mu.Unlock()
			s.send([]byte("<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"), false)
			return true
		}
		r := el.Get("resume")
		sm := &smState{id: s.srv.smID(), resumable: (r == "true" || r == "1") && s.srv.cfg.SMResumeTimeout > 0}
		s.sm = sm
		s.mu.Unlock()
		b := []byte("<enabled xmlns='urn:xmpp:sm:3'")
		b = wire.AppendAttr(b, "id", sm.id)
		standby := ""
		if sm.resumable {
			s.srv.smDetached.add(sm.id, s)
			b = append(b, " resume='true' max='"+strconv.Itoa(int(s.srv.cfg.SMResumeTimeout/time.Second))+"'"...)
			standby = s.srv.currentStandby()
		}
		s.mu.Lock()
		release := noop
		if standby != "" && s.sm == sm {
			release = s.startReplicaLocked(standby) // before <enabled/>: what follows it is copied
		}
		s.out = append(s.out, outItem{b: append(b, "/>"...), enabled: true})
		s.notify()
		s.mu.Unlock()
		release()
	case "r":
		s.mu.Lock()
		if sm := s.sm; sm != nil {
			if len(sm.pending) == 0 {
				s.queueAckLocked(sm.inH)
			} else {
				sm.ackWant, sm.ackAt = true, sm.inRecv
			}
		}
		s.mu.Unlock()
	case "a":
		h, err := strconv.ParseUint(el.Get("h"), 10, 32)
		if err != nil {
			s.closeWithError(closeNotWellFormed, wire.UndefinedCondition, "invalid h")
			return false
		}
		s.mu.Lock()
		if sm := s.sm; sm != nil {
			if before(sm.outSent, uint32(h)) {
				s.mu.Unlock()
				// XEP-0198 §4: acking more than was sent is an error.
				s.closeWithError(closeNotWellFormed, wire.UndefinedCondition, "h acknowledges more stanzas than were sent")
				return false
			}
			sm.ack(uint32(h))
			sm.rPending = false
			s.copyClientAckLocked(uint32(h))
		}
		s.mu.Unlock()
	default:
		s.send([]byte("<failed xmlns='urn:xmpp:sm:3'><feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"), false)
	}
	return true
}

// ack drops outbound stanzas up to and including h.
func (sm *smState) ack(h uint32) {
	n := 0
	for n < len(sm.unacked) && !before(h, sm.unacked[n].seq) {
		n++
	}
	sm.unacked = append(sm.unacked[:0], sm.unacked[n:]...)
}

// countOutLocked counts the items the writer took from the queue, in
// order: stanzas after <enabled/> get their XEP-0198 sequence number and
// stay in unacked until the client acknowledges them (the client counts
// the stanzas that follow <enabled/>, and so do we: XEP-0198 §4). Counting
// when taken rather than when written keeps every stanza either queued or
// unacked, never in between, for snapshots and handovers. It reports
// whether the client left more than SMMaxUnacked stanzas unacknowledged.
// Called with s.mu held.
func (s *Session) countOutLocked(items []outItem) (over bool) {
	sm := s.sm
	if sm == nil {
		return false
	}
	for i := range items {
		it := &items[i]
		switch {
		case it.enabled:
			sm.counting = true
		case it.stanza && sm.counting:
			sm.outSent++
			sm.unacked = append(sm.unacked, smItem{seq: sm.outSent, b: it.b})
			it.counted = true
		}
	}
	return len(sm.unacked) > s.srv.cfg.SMMaxUnacked
}

// smWantsAck reports whether the writer should request an ack now.
func (s *Session) smWantsAck() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sm := s.sm
	if sm == nil || len(sm.unacked) == 0 || sm.rPending {
		return false
	}
	sm.rPending = true
	return true
}

func (sm *smState) unackedStanzas() [][]byte {
	out := make([][]byte, len(sm.unacked))
	for i, it := range sm.unacked {
		out[i] = it.b
	}
	return out
}

// queueAckLocked answers an <r/> with h, once the standby has h. While
// one copy of the count is on its way, later answers wait and go out
// together with the next one (one link round trip per burst of <r/>, not
// per <r/>). Called with s.mu held.
func (s *Session) queueAckLocked(h uint32) {
	sm := s.sm
	if sm.inFlight {
		sm.inNext, sm.inWait = h, true
		return
	}
	if s.copyHandledLocked(h, func() {
		s.mu.Lock()
		if s.sm == sm {
			sm.inFlight = false
			s.ackOutLocked(h)
			if sm.inWait {
				sm.inWait = false
				s.queueAckLocked(sm.inNext)
			}
		}
		s.mu.Unlock()
	}) {
		sm.inFlight = true
		return
	}
	s.ackOutLocked(h)
}

// ackOutLocked queues <a h/> unless a higher h went out already (a copied
// answer can return after a later direct one).
func (s *Session) ackOutLocked(h uint32) {
	sm := s.sm
	if sm.ackOut && before(h, sm.ackSent) {
		return
	}
	sm.ackSent, sm.ackOut = h, true
	s.out = append(s.out, outItem{b: wire.Ack(h), ack: true})
	s.notify()
}
