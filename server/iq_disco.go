package server

import (
	"sort"

	"xcollect.dev/xcollect/internal/wire"
)

// XEP-0030 Service Discovery of the server: its identity and the features
// of the IQ table (disco#info), and the served components (disco#items).
const (
	nsDiscoInfo  = "http://jabber.org/protocol/disco#info"
	nsDiscoItems = "http://jabber.org/protocol/disco#items"

	// Features that are no IQ service of their own.
	nsStreamManagement = "urn:xmpp:sm:3" // XEP-0198
	featureOffline     = "msgoffline"    // XEP-0160: messages to offline users are stored
)

// discoInfo answers disco#info on the server.
func (s *Server) discoInfo(_ *Session, st *stanza) []byte {
	b := []byte("<query xmlns='" + nsDiscoInfo + "'><identity category='server' type='im' name='xcollect'/>")
	for _, f := range s.iqs.features() {
		b = append(b, "<feature"...)
		b = wire.AppendAttr(b, "var", f)
		b = append(b, "/>"...)
	}
	b = append(b, "</query>"...)
	return iqResult(st, b)
}

// discoItems answers disco#items on the server: one item per component.
func (s *Server) discoItems(_ *Session, st *stanza) []byte {
	b := []byte("<query xmlns='" + nsDiscoItems + "'>")
	if s.queue != nil {
		comps := s.queue.Components()
		sort.Strings(comps)
		for _, c := range comps {
			b = append(b, "<item"...)
			b = wire.AppendAttr(b, "jid", c)
			b = append(b, "/>"...)
		}
	}
	b = append(b, "</query>"...)
	return iqResult(st, b)
}
