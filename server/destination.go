package server

import "mellium.im/xmpp/jid"

// destination is what a stanza's 'to' points at. The client path
// (Server.route, directed presence), the component path
// (RouteFromComponent) and IQ answers all classify with destinationOf, so
// they agree on what is a user, a component or the server. Whether a user's
// session is local, on a peer node or absent (offline storage) is decided
// later, by deliverToUser.
type destination uint8

const (
	// toRemote: a domain this server does not serve (no federation).
	toRemote destination = iota
	// toComponent: a configured component's domain (its durable queue).
	toComponent
	// toServer: a served domain itself.
	toServer
	// toUser: an account of a served domain.
	toUser
)

// destinationOf classifies to.
func (s *Server) destinationOf(to jid.JID) destination {
	domain := to.Domainpart()
	switch {
	case s.queue != nil && s.queue.IsComponent(domain):
		return toComponent
	case !s.domains[domain]:
		return toRemote
	case to.Localpart() == "":
		return toServer
	default:
		return toUser
	}
}
