package server

import (
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/storage"
)

// RouteFromComponent routes a stanza that the connected component
// (XEP-0114) sent. The component package has checked that its 'from' lies
// in the component's domain. Stanzas go to users (full or bare JID; offline
// storage for messages to absent users), to other components' queues, or
// to the server. A presence probe to a user is answered with the presence
// of each available resource, queued to the component like any report.
// It never blocks on the network; store writes are bounded by a timeout.
func (s *Server) RouteFromComponent(component string, el *wire.Element) {
	from, err := jid.Parse(el.Get("from"))
	if err != nil {
		return
	}
	st := &stanza{name: el.Name.Local, typ: el.Get("type"), id: el.Get("id"), from: from, el: el, raw: wire.Stamp(el.Raw, from.String(), "")}
	to, err := jid.Parse(el.Get("to"))
	if err != nil || el.Get("to") == "" {
		s.queueError(component, st, "modify", "jid-malformed", "a component stanza needs a valid 'to'")
		return
	}
	st.to = to
	dest := s.destinationOf(to)
	if st.name == "presence" {
		switch {
		case dest == toUser && st.typ == "probe":
			s.answerProbe(component, from, to)
		case dest == toComponent:
			s.deliverToComponent(st, to.Domainpart(), noop)
		case dest == toUser:
			s.deliverPresence(to, st.raw)
		}
		return
	}
	if dest == toUser && st.name == "iq" && to.Resourcepart() == "" {
		s.queueError(component, st, "cancel", "service-unavailable", "")
		return
	}
	s.route(st, noop)
}

// answerProbe queues to component the current presence of every resource
// of user (unavailable when none is online).
func (s *Server) answerProbe(component string, from, user jid.JID) {
	sent := false
	// presenceOf stamps each resource's full JID as 'from' and the prober
	// as 'to' (wire.Stamp with from "" would strip the sender).
	s.presenceOf(user.Bare().String(), from.String(), func(b []byte) {
		sent = true
		s.queuePresence(component, user, b)
	})
	if !sent {
		s.queuePresence(component, user, presenceStanza(user.Bare().String(), from.String(), "unavailable"))
	}
}

func (s *Server) queuePresence(component string, user jid.JID, raw []byte) {
	el, err := wire.Parse(raw)
	if err != nil {
		return
	}
	s.queue.Submit(storage.QueueItem{Component: component, Sender: user.Bare().String(), From: el.Get("from"), Stanza: raw}, func(storage.EnqueueResult, error) {})
}

// queueError sends an error reply to a component through its queue.
func (s *Server) queueError(component string, st *stanza, errType, cond, text string) {
	if st.typ == "error" || s.queue == nil {
		return
	}
	s.queueStanza(component, wire.ErrorStanza(st.name, st.id, st.el.Get("to"), st.from.String(), errType, cond, text))
}

// queueStanza queues a server-generated stanza (a reply) for component.
func (s *Server) queueStanza(component string, raw []byte) {
	s.queue.Submit(storage.QueueItem{Component: component, Sender: component, From: component, Stanza: raw}, func(res storage.EnqueueResult, err error) {
		if err != nil || res == storage.Full {
			s.log.Warn().Err(err).Str("component", component).Stringer("result", res).Msg("reply to component not queued")
		}
	})
}
