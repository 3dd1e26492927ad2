package server

import (
	"sort"
	"sync"
)

// sessionTable holds the bound sessions of this node by bare JID and
// resource. Safe for concurrent use; never calls out while holding its lock.
type sessionTable struct {
	mu     sync.RWMutex
	byBare map[string]map[string]*Session // bare → resource → session
}

func (t *sessionTable) init() { t.byBare = make(map[string]map[string]*Session) }

// add binds s and returns the session it replaced (same full JID), if any.
func (t *sessionTable) add(s *Session) *Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.byBare[s.bare]
	if m == nil {
		m = make(map[string]*Session)
		t.byBare[s.bare] = m
	}
	res := s.jid.Resourcepart()
	old := m[res]
	m[res] = s
	return old
}

// remove unbinds s if it is still the session of its full JID.
func (t *sessionTable) remove(s *Session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.byBare[s.bare]
	res := s.jid.Resourcepart()
	if m[res] != s {
		return false
	}
	delete(m, res)
	if len(m) == 0 {
		delete(t.byBare, s.bare)
	}
	return true
}

// get returns the session of a full JID.
func (t *sessionTable) get(bare, resource string) *Session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.byBare[bare][resource]
}

// resources returns the sessions of a bare JID, sorted by resource.
func (t *sessionTable) resources(bare string) []*Session {
	t.mu.RLock()
	m := t.byBare[bare]
	out := make([]*Session, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	t.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].full < out[j].full })
	return out
}

func (t *sessionTable) all() []*Session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []*Session
	for _, m := range t.byBare {
		for _, s := range m {
			out = append(out, s)
		}
	}
	return out
}

func (t *sessionTable) count() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := 0
	for _, m := range t.byBare {
		n += len(m)
	}
	return n
}

// bind registers a newly bound session; a session with the same full JID is
// replaced and closed with <conflict/> (RFC 6120 §7.7.2.2).
func (s *Server) bind(sess *Session) {
	if old := s.sessions.add(sess); old != nil {
		old.closeWithError(closeConflict, "conflict", "replaced by a new session for the same resource")
	}
	s.stats.Sessions.Store(int64(s.sessions.count()))
	sess.log.Info().Msg("session bound")
	if s.cluster != nil {
		s.cluster.Publish(sess.peerInfo())
	}
}

// unbind removes sess from the table if it is still there and reports
// whether it was.
func (s *Server) unbind(sess *Session) bool {
	if !s.sessions.remove(sess) {
		return false
	}
	s.stats.Sessions.Store(int64(s.sessions.count()))
	sess.log.Info().Msg("session ended")
	if s.cluster != nil {
		s.cluster.Unpublish(sess.full)
	}
	return true
}
