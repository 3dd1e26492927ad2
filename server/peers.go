package server

import (
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/storage"
)

// PeerSessionsGone is called when sessions of another node disappeared
// without saying goodbye (the node died or left): the local contacts of
// each available one receive its unavailable presence. Every node does this
// for its own sessions only, so nobody gets it twice.
func (s *Server) PeerSessionsGone(gone []PeerSession) {
	// Roster reads must not run on the cluster's event goroutine.
	s.spawn(func() { s.peerSessionsGone(gone) })
}

func (s *Server) peerSessionsGone(gone []PeerSession) {
	for _, p := range gone {
		if !p.Available {
			continue
		}
		from, err := jid.Parse(p.JID)
		if err != nil {
			continue
		}
		bare := from.Bare().String()
		if s.liveElsewhere(bare, p) {
			continue // the session moved to another node (resumption): no unavailable
		}
		ctx, cancel := s.storeCtx()
		items, err := s.store.Rosters().GetRoster(ctx, bare)
		cancel()
		if err != nil {
			s.log.Warn().Err(err).Str("jid", bare).Msg("load roster for a vanished peer session")
			continue
		}
		send := func(contact string) {
			for _, sess := range s.sessions.resources(contact) {
				sess.mu.Lock()
				avail := sess.available
				sess.mu.Unlock()
				if avail {
					sess.send(presenceStanza(p.JID, sess.full, "unavailable"), true)
				}
			}
		}
		for _, it := range items {
			if it.Subscription == storage.SubFrom || it.Subscription == storage.SubBoth {
				send(it.JID)
			}
		}
		send(bare) // the user's own resources here
	}
}

// liveElsewhere reports whether the full JID of a vanished entry is still
// bound here or on another node than the one that dropped it.
func (s *Server) liveElsewhere(bare string, p PeerSession) bool {
	for _, r := range s.resourcesOf(bare) {
		if r.full == p.JID && (r.local != nil || r.node != p.Node) {
			return true
		}
	}
	return false
}

// Conflict closes the local session of full with <conflict/>: the same
// resource was bound later on another node (RFC 6120 §7.7.2.2).
func (s *Server) Conflict(full string) {
	j, err := jid.Parse(full)
	if err != nil {
		return
	}
	if sess := s.sessions.get(j.Bare().String(), j.Resourcepart()); sess != nil {
		sess.closeWithError(closeConflict, wire.Conflict, "replaced by a new session for the same resource on another node")
	}
}

// Undeliverable takes back a stanza a peer node could not deliver:
// messages go to offline storage.
func (s *Server) Undeliverable(to string, raw []byte) {
	s.offload(func() { s.undeliverable(to, raw) }) // a store write: not on the link
}
