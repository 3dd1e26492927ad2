package server

import (
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/storage"
)

// What other nodes hand this one through the cluster: stanzas for local
// sessions (DeliverFromPeer, DeliverFromPeerAcked, Undeliverable) and
// directory events (PeerSessionsGone, Conflict). Control messages between
// nodes are in peer_protocol.go.

// DeliverFromPeerAcked is DeliverFromPeer for a stanza whose sender waits
// for a receipt: ack runs once it is in a local session's queue, with the
// node the session moved to, or stored offline.
func (s *Server) DeliverFromPeerAcked(to string, raw []byte, ack func()) {
	s.deliverFromPeer(to, raw, ack, false)
}

// DeliverFromPeer takes a stanza another node routed here for a local
// target.
func (s *Server) DeliverFromPeer(to string, raw []byte) {
	s.deliverFromPeer(to, raw, noop, false)
}

// deliverFromPeer hands a peer's stanza to the local session of to; when
// that session has moved to another node it forwards the stanza there
// once (forwarded: it was forwarded here already, peerForward); otherwise
// a message is stored offline. ack runs when done.
func (s *Server) deliverFromPeer(to string, raw []byte, ack func(), forwarded bool) {
	j, err := jid.Parse(to)
	if err != nil {
		ack() // nothing to deliver to: do not make the sender retry
		return
	}
	bare := j.Bare().String()
	if sess := s.sessions.get(bare, j.Resourcepart()); sess != nil {
		sess.sendThen(raw, ack)
		return
	}
	if !forwarded && s.cluster != nil {
		for _, r := range s.withMoved(s.resourcesOf(bare), to) {
			if r.full == to && r.local == nil {
				err := s.sendPeerAcked(r.node, peerForward, forwardedStanza{To: to, Stanza: raw}, func(err error) {
					if err == nil {
						ack()
					} else {
						s.offload(func() { s.undeliverable(to, raw); ack() })
					}
				})
				if err == nil {
					return
				}
				break
			}
		}
	}
	// The session is gone: store it like a local stanza that could not be
	// written (off the link's reader: a store write), then confirm.
	s.offload(func() { s.undeliverable(to, raw); ack() })
}

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
