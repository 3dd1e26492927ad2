package server

import (
	"strconv"
	"sync"
	"time"
)

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
