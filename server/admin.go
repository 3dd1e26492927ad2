package server

import (
	"sort"
	"sync"

	"mellium.im/xmpp/jid"
)

// SessionJIDs returns the full JIDs of the sessions bound on this node,
// sorted (for the admin API).
func (s *Server) SessionJIDs() []string {
	all := s.sessions.all()
	out := make([]string, 0, len(all))
	for _, ses := range all {
		out = append(out, ses.full)
	}
	sort.Strings(out)
	return out
}

// Kick ends the session of full JID on this node with a policy-violation
// stream error (no resumption) and reports whether there was one.
func (s *Server) Kick(full string) bool {
	j, err := jid.Parse(full)
	if err != nil || j.Resourcepart() == "" {
		return false
	}
	ses := s.sessions.get(j.Bare().String(), j.Resourcepart())
	if ses == nil {
		return false
	}
	ses.closeWithError(closePolicyViolation, "policy-violation", "disconnected by an administrator")
	return true
}

// SessionsByDomain counts the sessions bound on this node by domain (for
// the metrics: the domains are the served ones, a bounded set).
func (s *Server) SessionsByDomain() map[string]int {
	out := make(map[string]int, len(s.cfg.Domains))
	for _, d := range s.cfg.Domains {
		out[d] = 0 // every served domain has its series
	}
	for _, ses := range s.sessions.all() {
		out[ses.jid.Domainpart()]++
	}
	return out
}

// loginMechanisms are the mechanisms Logins counts, in its order.
var loginMechanisms = [...]string{mechSCRAMSHA256, mechSCRAMSHA1, mechPlain}

// LoginStat is one SASL mechanism's login outcomes on this node.
type LoginStat struct {
	Mechanism         string
	Succeeded, Failed int64
}

// countLogin counts one SASL exchange's outcome (other mechanisms are
// refused before an exchange and not counted).
func (st *Stats) countLogin(mech string, ok bool) {
	for i, m := range loginMechanisms {
		if m == mech {
			j := 0
			if ok {
				j = 1
			}
			st.logins[i][j].Add(1)
			return
		}
	}
}

// Logins returns the login outcomes by mechanism (for the metrics).
func (st *Stats) Logins() []LoginStat {
	out := make([]LoginStat, len(loginMechanisms))
	for i, m := range loginMechanisms {
		out[i] = LoginStat{Mechanism: m, Failed: st.logins[i][0].Load(), Succeeded: st.logins[i][1].Load()}
	}
	return out
}

// conditionCounts counts stream errors by condition. The conditions are
// the RFC 6120 names the server's code passes, a bounded set.
type conditionCounts struct {
	mu sync.Mutex
	n  map[string]int64
}

func (c *conditionCounts) add(cond string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int64)
	}
	c.n[cond]++
}

// StreamErrorsByCondition returns the stream errors sent on client
// streams by condition (for the metrics).
func (st *Stats) StreamErrorsByCondition() map[string]int64 {
	st.conditions.mu.Lock()
	defer st.conditions.mu.Unlock()
	out := make(map[string]int64, len(st.conditions.n))
	for k, v := range st.conditions.n {
		out[k] = v
	}
	return out
}
