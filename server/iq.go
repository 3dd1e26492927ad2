package server

import (
	"bytes"
	"encoding/xml"
	"sort"

	"xcollect.dev/xcollect/internal/wire"
)

// Namespaces of the built-in IQ services.
const (
	nsPing       = "urn:xmpp:ping"
	nsDiscoInfo  = "http://jabber.org/protocol/disco#info"
	nsDiscoItems = "http://jabber.org/protocol/disco#items"
	nsVersion    = "jabber:iq:version"
)

// serverFeatures are the features listed by disco#info on the server: only
// what is really implemented.
var serverFeatures = []string{
	nsDiscoInfo, nsDiscoItems, nsPing, nsVersion, nsRoster,
	"urn:xmpp:sm:3", "msgoffline", wire.NSSession,
}

// payloadName returns the name of the first child element of raw.
func payloadName(raw []byte) xml.Name {
	d := xml.NewDecoder(bytes.NewReader(raw))
	depth := 0
	for {
		tok, err := d.Token()
		if err != nil {
			return xml.Name{}
		}
		if se, ok := tok.(xml.StartElement); ok {
			depth++
			if depth == 2 {
				return se.Name
			}
		}
	}
}

// handleIQ takes an IQ from a local client: the ones for the account
// itself (roster, legacy session) are answered here, others are routed.
func (s *Server) handleIQ(sess *Session, st *stanza, done func()) {
	switch st.typ {
	case "get", "set":
		if st.id == "" {
			sess.send(st.errorReply("modify", "bad-request", "an IQ needs an id"), true)
			done()
			return
		}
	case "result", "error":
		if !st.hasTo() || (st.to.Localpart() == "" && s.domains[st.to.Domainpart()]) {
			done() // answers to our pings
			return
		}
		s.route(st, done)
		return
	default:
		sess.send(st.errorReply("modify", "bad-request", "invalid IQ type"), true)
		done()
		return
	}
	toSelf := !st.hasTo() || st.to.String() == sess.bare
	if toSelf {
		switch p := payloadName(st.el.Raw); p.Space {
		case nsRoster:
			s.handleRoster(sess, st)
		case wire.NSSession:
			sess.send(iqResult(st, nil), true) // RFC 3921 session: a no-op today
		case nsPing:
			sess.send(iqResult(st, nil), true)
		default:
			if !st.hasTo() {
				s.handleServerIQ(st)
			} else {
				sess.send(st.errorReply("cancel", "service-unavailable", ""), true)
			}
		}
		done()
		return
	}
	s.route(st, done)
}

// handleServerIQ answers an IQ addressed to the server (or to no one).
func (s *Server) handleServerIQ(st *stanza) {
	if st.typ != "get" && st.typ != "set" {
		return
	}
	p := payloadName(st.el.Raw)
	var reply []byte
	switch {
	case p.Space == nsPing && st.typ == "get":
		reply = iqResult(st, nil)
	case p.Space == nsDiscoInfo && st.typ == "get":
		b := []byte("<query xmlns='" + nsDiscoInfo + "'><identity category='server' type='im' name='xcollect'/>")
		for _, f := range serverFeatures {
			b = append(b, "<feature var='"+f+"'/>"...)
		}
		b = append(b, "</query>"...)
		reply = iqResult(st, b)
	case p.Space == nsDiscoItems && st.typ == "get":
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
		reply = iqResult(st, b)
	case p.Space == nsVersion && st.typ == "get":
		b := []byte("<query xmlns='" + nsVersion + "'><name>xcollect</name><version>")
		b = wire.AppendText(b, s.cfg.Version)
		b = append(b, "</version></query>"...)
		reply = iqResult(st, b)
	default:
		reply = st.errorReply("cancel", "service-unavailable", "")
	}
	s.reply(st, reply)
}

// reply hands an answer to st's sender: a client session or, for a
// component, its queue.
func (s *Server) reply(st *stanza, raw []byte) {
	if s.queue != nil && s.queue.IsComponent(st.from.Domainpart()) {
		s.queueStanza(st.from.Domainpart(), raw)
		return
	}
	s.deliverTo(st.from, raw)
}
