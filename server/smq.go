package server

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
	// an answer waiting for the standby's copy of the count (smq_replica.go)
	inFlight bool
	inWait   bool // another answer, with inNext, follows the one in flight
	inNext   uint32
	// outbound: stanzas written since <enable/> and those not yet acked.
	outSent  uint32
	counting bool // set once <enabled/> is written: stanzas before it are not counted
	unacked  []smItem
	rPending bool
	timer    *time.Timer // resumption timeout while detached
	// the copy on a standby node (cluster; smq_replica.go)
	rep      string   // node holding it ("" = none)
	repDirty bool     // an update was lost: a fresh snapshot is due
	repHeld  []func() // senders and acks waiting for that snapshot
	repGen   uint64   // snapshots sent (to this standby or earlier ones)
	repOK    uint64   // the generation whose snapshot the standby confirmed
}

type smItem struct {
	seq uint32
	b   []byte
}

// before reports a < b in 2^32 serial arithmetic.
func before(a, b uint32) bool { return int32(a-b) < 0 }

// track registers an inbound stanza and returns the function that marks it
// handled. Without XEP-0198 it returns noop.
func (s *Session) track() func() {
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
			s.repLocked(&repMsg{Op: "ack", H: uint32(h)}, nil)
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

// settleTimeout bounds how long a resumption waits for stanzas that were
// received but are not yet handled (durable).
const settleTimeout = 3 * time.Second

// settleInbound waits until every stanza received on the old stream is
// handled, so that the h of <resumed/> is exact; the client then resends
// only what the server never got. If the store cannot make them durable in
// time, the unhandled ones are forgotten: the counters restart at the
// handled count (their late completions no longer count), the client
// resends them, and those that did commit reach their recipient twice
// unless they carry an XEP-0359 origin-id (queue dedupe).
// Called without s.mu; returns with it held.
func (s *Session) settleInbound() {
	deadline := time.Now().Add(settleTimeout)
	for {
		s.mu.Lock()
		sm := s.sm
		if len(sm.pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			fresh := *sm
			fresh.inRecv, fresh.pending, fresh.ackWant = sm.inH, nil, false
			fresh.inFlight, fresh.inWait = false, false // the old one's copy answers nobody now
			s.sm = &fresh                               // completions of the old stanzas see another sm and do nothing
			return
		}
		s.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
}

// unplugLocked takes the connection away from the session: its writer
// stops and a pending resumption timeout is cancelled. It returns the old
// connection (nil when detached). Called with s.mu held.
func (s *Session) unplugLocked() *c2sConn {
	c := s.c
	s.c = nil
	if s.stop != nil {
		close(s.stop)
		s.stop, s.wake = nil, nil
	}
	if s.sm != nil && s.sm.timer != nil {
		s.sm.timer.Stop()
	}
	return c
}

// detach parks a session whose connection broke, for resumption.
func (s *Session) detach(c *c2sConn) {
	s.mu.Lock()
	if s.c != c {
		s.mu.Unlock()
		return
	}
	s.unplugLocked()
	sm := s.sm
	sm.rPending = false
	s.repLocked(&repMsg{Op: "in", H: sm.inH}, nil)
	sm.timer = time.AfterFunc(s.srv.cfg.SMResumeTimeout, func() {
		// Run as a server goroutine: refused (and moot) once Shutdown
		// began, which ends detached sessions itself.
		s.srv.spawn(func() {
			s.mu.Lock()
			still := s.c == nil && !s.ended
			s.mu.Unlock()
			if still {
				s.log.Info().Msg("resumption timed out")
				s.srv.endSession(s)
			}
		})
	})
	s.mu.Unlock()
	c.conn.Close()
	s.log.Info().Msg("session detached, waiting for resumption")
}

// resume handles <resume/> (XEP-0198 §5) on a freshly authenticated
// stream. done is true when the stream was resumed (and has ended by the
// time resume returns) or closed.
func (s *Server) resume(c *c2sConn, el *wire.Element) (done bool, err error) {
	previd := el.Get("previd")
	h, perr := strconv.ParseUint(el.Get("h"), 10, 32)
	bare := c.user + "@" + c.domain
	sess := s.smDetached.get(previd)
	if perr == nil && sess == nil && s.cluster != nil {
		failedH := func(h uint32) error {
			return c.write([]byte("<failed xmlns='urn:xmpp:sm:3' h='" + strconv.FormatUint(uint64(h), 10) + "'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"))
		}
		unreachable := false
		if owner := smOwner(previd); owner != "" && owner != s.cfg.NodeName {
			st, err := s.takeover(owner, previd, bare, uint32(h))
			switch {
			case err != nil:
				unreachable = true
				c.log.Info().Err(err).Str("node", owner).Msg("resume: session owner unreachable")
			case st.OK:
				return s.resumeMoved(c, previd, st, uint32(h))
			case st.HSet:
				return false, failedH(st.H)
			}
		}
		// The owner is dead, restarted or does not know the id: its
		// standby may hold a copy (smq_replica.go).
		if s.smDetached.movedTo(previd) == "" && !s.smDetached.endedFor(previd, bare) {
			if st, ok := s.findReplica(previd, bare, uint32(h), unreachable); ok {
				if st.OK {
					return s.resumeMoved(c, previd, st, uint32(h))
				}
				return false, failedH(st.H)
			}
		}
	}
	if perr != nil || sess == nil || sess.bare != bare {
		return false, c.write(s.smDetached.failed(previd, bare))
	}
	sess.mu.Lock()
	if sess.ended || sess.sm == nil || before(sess.sm.outSent, uint32(h)) {
		sess.mu.Unlock()
		return false, c.write(s.smDetached.failed(previd, bare))
	}
	sess.mu.Unlock()
	sess.settleInbound()
	sm := sess.sm
	if sess.ended {
		sess.mu.Unlock()
		return false, c.write(s.smDetached.failed(previd, bare))
	}
	old := sess.unplugLocked()
	sm.ack(uint32(h))
	sess.repLocked(&repMsg{Op: "ack", H: uint32(h)}, nil)
	resend := len(sm.unacked)
	sess.requeueForResumeLocked()
	sm.outSent = uint32(h)
	sm.rPending = false
	inH := sm.inH
	sess.mu.Unlock()
	if old != nil {
		old.conn.Close() // a half-open connection the client gave up on
	}
	b := []byte("<resumed xmlns='urn:xmpp:sm:3'")
	b = wire.AppendAttr(b, "previd", previd)
	b = append(b, " h='"+strconv.FormatUint(uint64(inH), 10)+"'/>"...)
	if err := c.write(b); err != nil {
		// park it again (detach re-arms the resumption timeout)
		sess.mu.Lock()
		sess.c = c
		sess.mu.Unlock()
		sess.detach(c)
		return true, err
	}
	sess.log.Info().Int("resent", resend).Msg("session resumed")
	sess.attach(c)
	rerr := sess.readLoop(c)
	sess.connLost(c, rerr)
	return true, nil
}

// requeueForResumeLocked puts the unacknowledged stanzas back in front of
// the queue for the resumed stream. An <a/> queued for the old connection
// is dropped: the client would take it for the answer to an <r/> it sends
// after <resumed/> and count from a stale h (XEP-0198 §5: <resumed h/> is
// the count). Called with s.mu held.
func (s *Session) requeueForResumeLocked() {
	sm := s.sm
	out := make([]outItem, 0, len(sm.unacked)+len(s.out))
	for _, it := range sm.unacked {
		out = append(out, outItem{b: it.b, stanza: true})
	}
	for _, it := range s.out {
		if !it.ack {
			out = append(out, it)
		}
	}
	s.out = out
	sm.unacked = nil
}

// detachedTable indexes resumable sessions by their stream management id,
// and remembers for a while how many stanzas ended ones had handled, so
// that a late <resume/> gets <failed h='…'/> (XEP-0198 §5) and the client
// resends only the rest.
type detachedTable struct {
	mu    sync.Mutex
	byID  map[string]*Session
	ended map[string]endedSM
	keep  time.Duration
	// full JIDs of sessions handed over to another node (bounded by
	// maxEndedSM through moved, expired after movedFullTTL)
	movedFull   map[string]movedJID
	movedPruned time.Time
}

type endedSM struct {
	bare    string
	h       uint32
	at      time.Time
	movedTo string // the node the session was handed over to ("" = ended here)
}

// maxEndedSM bounds the memory of ended sessions' counters.
const maxEndedSM = 100000

func (t *detachedTable) init(keep time.Duration) {
	t.byID = make(map[string]*Session)
	t.ended = make(map[string]endedSM)
	t.movedFull = make(map[string]movedJID)
	t.keep = keep
}

// moved remembers that session id went to node (a later resume elsewhere
// is forwarded there).
func (t *detachedTable) moved(id, full, node string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.ended) >= maxEndedSM {
		return // bounded: the request then gets <failed/>
	}
	now := time.Now()
	t.ended[id] = endedSM{at: now, movedTo: node}
	if now.Sub(t.movedPruned) > movedFullTTL { // one scan per TTL, not per move
		for f, m := range t.movedFull {
			if now.Sub(m.at) > movedFullTTL {
				delete(t.movedFull, f)
			}
		}
		t.movedPruned = now
	}
	t.movedFull[full] = movedJID{node: node, at: now}
}

// movedFullTTL is how long a node forwards stanzas for a full JID whose
// session it handed over: until every directory has the new entry.
const movedFullTTL = time.Minute

type movedJID struct {
	node string
	at   time.Time
}

// movedFullTo returns the node the session of full JID was recently
// handed over to, if any. The directories of other nodes may not know it
// yet: a stanza that still comes here is forwarded there.
func (t *detachedTable) movedFullTo(full string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if m, ok := t.movedFull[full]; ok && time.Since(m.at) <= movedFullTTL {
		return m.node
	}
	return ""
}

// movedTo returns the node session id was handed over to, if any.
func (t *detachedTable) movedTo(id string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ended[id].movedTo
}

// endedHere remembers the handled count of session id of bare, which ended
// on this node (a standby's copy that expired or could not be resumed).
func (t *detachedTable) endedHere(id, bare string, h uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.ended) < maxEndedSM {
		t.ended[id] = endedSM{bare: bare, h: h, at: time.Now()}
	}
}

// endedFor reports whether session id of bare ended here recently.
func (t *detachedTable) endedFor(id, bare string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.ended[id]
	return ok && e.bare == bare
}

// failed returns the <failed/> answer to a resume of id by bare: with the
// handled count when the session ended here recently.
func (t *detachedTable) failed(id, bare string) []byte {
	t.mu.Lock()
	e, ok := t.ended[id]
	t.mu.Unlock()
	b := []byte("<failed xmlns='urn:xmpp:sm:3'")
	if ok && e.bare == bare {
		b = append(b, " h='"+strconv.FormatUint(uint64(e.h), 10)+"'"...)
	}
	return append(b, "><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"...)
}

func (t *detachedTable) add(id string, s *Session) {
	t.mu.Lock()
	t.byID[id] = s
	delete(t.ended, id) // it lives here (again)
	t.mu.Unlock()
}

func (t *detachedTable) get(id string) *Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

func (t *detachedTable) remove(s *Session) {
	s.mu.Lock()
	sm := s.sm
	if sm == nil {
		s.mu.Unlock()
		return
	}
	if sm.timer != nil {
		sm.timer.Stop()
	}
	h := sm.inH
	s.mu.Unlock()
	now := time.Now()
	t.mu.Lock()
	if t.byID[sm.id] == s {
		delete(t.byID, sm.id)
	}
	if len(t.ended) >= maxEndedSM {
		for id, e := range t.ended {
			if now.Sub(e.at) > t.keep || len(t.ended) >= maxEndedSM {
				delete(t.ended, id)
			}
		}
	}
	t.ended[sm.id] = endedSM{bare: s.bare, h: h, at: now}
	t.mu.Unlock()
}

// list returns every resumable session, attached or detached.
func (t *detachedTable) list() []*Session {
	t.mu.Lock()
	var out []*Session
	for _, s := range t.byID {
		out = append(out, s)
	}
	t.mu.Unlock()
	return out
}
