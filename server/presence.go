package server

import (
	"context"
	"encoding/xml"
	"strconv"
	"sync/atomic"

	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/storage"
)

// handlePresence takes a presence stanza from a local client (RFC 6121
// §3-§4): broadcasts, directed presence and subscription management.
func (s *Server) handlePresence(sess *Session, st *stanza, done func()) {
	if !st.hasTo() {
		switch st.typ {
		case "", "unavailable":
			s.presenceBroadcast(sess, st, done)
		default:
			// subscription types need a 'to'; probes come from servers only
			done()
		}
		return
	}
	switch st.typ {
	case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
		s.subscription(sess.jid, st.to, st.typ, "")
		done()
	case "probe":
		done() // clients do not probe (RFC 6121 §4.3); the server does
	default:
		// directed presence, available/unavailable/error
		switch s.destinationOf(st.to) {
		case toComponent:
			s.deliverToComponent(st, st.to.Domainpart(), done)
			return
		case toUser:
			s.deliverPresence(st.to, st.raw)
		}
		done()
	}
}

type presenceXML struct {
	Show     string `xml:"show"`
	Status   string `xml:"status"`
	Priority string `xml:"priority"`
}

// presenceBroadcast handles available and unavailable presence without 'to'.
func (s *Server) presenceBroadcast(sess *Session, st *stanza, done func()) {
	var p presenceXML
	if err := xml.Unmarshal(st.el.Raw, &p); err != nil {
		sess.send(st.errorReply("modify", "bad-request", ""), true)
		done()
		return
	}
	prio, err := strconv.Atoi(p.Priority)
	if p.Priority != "" && (err != nil || prio < -128 || prio > 127) {
		sess.send(st.errorReply("modify", "bad-request", "priority must be an integer from -128 to 127"), true)
		done()
		return
	}
	available := st.typ == ""
	sess.mu.Lock()
	initial := available && !sess.available
	wasAvailable := sess.available
	sess.available = available
	sess.priority, sess.show, sess.status = prio, p.Show, p.Status
	if available {
		sess.presence = st.raw
	} else {
		sess.presence = nil
	}
	sess.copyPresenceLocked()
	sess.mu.Unlock()
	if !available && !wasAvailable {
		done()
		return
	}
	if s.cluster != nil {
		s.cluster.Publish(sess.peerInfo())
	}
	s.broadcast(sess.jid, st.raw, done)
	if initial {
		s.initialPresence(sess, prio)
	}
}

// broadcast sends a user's presence (stamped from the full JID) to the
// contacts subscribed to it, the user's available resources, and the components
// that receive presence of the domain. done runs when the component copies
// are durable.
func (s *Server) broadcast(from jid.JID, raw []byte, done func()) {
	bare := from.Bare().String()
	ctx, cancel := s.storeCtx()
	items, err := s.store.Rosters().GetRoster(ctx, bare)
	cancel()
	if err != nil {
		s.log.Warn().Err(err).Str("jid", bare).Msg("load roster for presence broadcast")
	}
	for _, it := range items {
		if it.Subscription == storage.SubFrom || it.Subscription == storage.SubBoth {
			if cj, err := jid.Parse(it.JID); err == nil {
				s.deliverPresence(cj, wire.Stamp(raw, from.String(), it.JID))
			}
		}
	}
	// Every available resource of the user, the sender included: a user is
	// subscribed to its own presence (RFC 6121 §4.2.2, §4.4.2) and clients
	// wait for their own presence to come back.
	for _, r := range s.resourcesOf(bare) {
		if r.available {
			s.sendTo(r, wire.Stamp(raw, from.String(), r.full))
		}
	}
	s.presenceToComponents(from, raw, done)
}

// presenceToComponents queues a presence change for every component that
// receives the presence of from's domain; done runs when all are durable.
func (s *Server) presenceToComponents(from jid.JID, raw []byte, done func()) {
	if s.queue == nil {
		done()
		return
	}
	comps := s.queue.PresenceComponents(from.Domainpart())
	if len(comps) == 0 {
		done()
		return
	}
	var left atomic.Int32
	left.Store(int32(len(comps)))
	for _, c := range comps {
		item := storage.QueueItem{Component: c, Sender: from.Bare().String(), From: from.String(), Stanza: wire.Stamp(raw, from.String(), c)}
		s.queue.Submit(item, func(res storage.EnqueueResult, err error) {
			if err != nil || res == storage.Full {
				s.log.Warn().Err(err).Str("component", c).Str("jid", from.String()).Stringer("result", res).Msg("presence report not queued")
			}
			if left.Add(-1) == 0 {
				done()
			}
		})
	}
}

// deliverPresence hands a presence stanza to a full JID, or to every
// available resource of a bare JID.
func (s *Server) deliverPresence(to jid.JID, raw []byte) {
	if to.Resourcepart() != "" {
		s.deliverTo(to, raw)
		return
	}
	for _, r := range s.resourcesOf(to.Bare().String()) {
		if r.available {
			s.sendTo(r, raw)
		}
	}
}

// initialPresence does what follows a session's first available presence:
// probes the contacts it is subscribed to (answered here, since every
// account lives in the shared store), redelivers pending subscription
// requests and delivers offline messages (XEP-0160) when priority >= 0.
func (s *Server) initialPresence(sess *Session, prio int) {
	ctx, cancel := s.storeCtx()
	defer cancel()
	items, err := s.store.Rosters().GetRoster(ctx, sess.bare)
	if err != nil {
		s.log.Warn().Err(err).Str("jid", sess.bare).Msg("load roster for probes")
	}
	for _, it := range items {
		if it.Subscription == storage.SubTo || it.Subscription == storage.SubBoth {
			s.presenceOf(it.JID, sess.full, func(b []byte) { sess.send(b, true) })
		}
		if it.PendingIn {
			sess.send(presenceStanza(it.JID, sess.bare, "subscribe"), true)
		}
	}
	// The user's own other resources.
	s.presenceOf(sess.bare, sess.full, func(b []byte) { sess.send(b, true) })
	if prio >= 0 {
		s.deliverOffline(ctx, sess)
	}
}

// presenceOf calls emit with the current presence of each available
// resource of bare, addressed to to (the answer to a probe).
func (s *Server) presenceOf(bare, to string, emit func([]byte)) {
	for _, sess := range s.sessions.resources(bare) {
		if sess.full == to {
			continue
		}
		sess.mu.Lock()
		raw := sess.presence
		sess.mu.Unlock()
		if raw != nil {
			emit(wire.Stamp(raw, sess.full, to))
		}
	}
	if s.cluster != nil {
		for _, p := range s.cluster.Lookup(bare) {
			if p.Available && p.JID != to {
				emit(peerPresence(p, to))
			}
		}
	}
}

// peerPresence rebuilds a presence stanza from a directory entry.
func peerPresence(p PeerSession, to string) []byte {
	b := []byte("<presence")
	b = wire.AppendAttr(b, "from", p.JID)
	b = wire.AppendAttr(b, "to", to)
	b = append(b, '>')
	if p.Show != "" {
		b = append(b, "<show>"...)
		b = wire.AppendText(b, p.Show)
		b = append(b, "</show>"...)
	}
	if p.Status != "" {
		b = append(b, "<status>"...)
		b = wire.AppendText(b, p.Status)
		b = append(b, "</status>"...)
	}
	if p.Priority != 0 {
		b = append(b, "<priority>"+strconv.Itoa(p.Priority)+"</priority>"...)
	}
	return append(b, "</presence>"...)
}

// presenceStanza builds <presence from to type/>.
func presenceStanza(from, to, typ string) []byte {
	b := []byte("<presence")
	b = wire.AppendAttr(b, "from", from)
	b = wire.AppendAttr(b, "to", to)
	if typ != "" {
		b = wire.AppendAttr(b, "type", typ)
	}
	return append(b, "/>"...)
}

// broadcastUnavailable announces that sess went away.
func (s *Server) broadcastUnavailable(sess *Session) {
	raw := []byte("<presence")
	raw = wire.AppendAttr(raw, "from", sess.full)
	raw = append(raw, " type='unavailable'/>"...)
	s.broadcast(sess.jid, raw, noop)
}

func addSub(sub string, to, from bool) string {
	hasTo := sub == storage.SubTo || sub == storage.SubBoth || to
	hasFrom := sub == storage.SubFrom || sub == storage.SubBoth || from
	return subOf(hasTo, hasFrom)
}

func removeSub(sub string, to, from bool) string {
	hasTo := (sub == storage.SubTo || sub == storage.SubBoth) && !to
	hasFrom := (sub == storage.SubFrom || sub == storage.SubBoth) && !from
	return subOf(hasTo, hasFrom)
}

func subOf(to, from bool) string {
	switch {
	case to && from:
		return storage.SubBoth
	case to:
		return storage.SubTo
	case from:
		return storage.SubFrom
	}
	return storage.SubNone
}

// subscription applies a subscription stanza of type typ that user sends
// to contact (RFC 6121 §3): the user's roster (outbound side), then the
// contact's roster and delivery (inbound side) when the contact is local.
func (s *Server) subscription(user, contact jid.JID, typ, _ string) {
	ctx, cancel := s.storeCtx()
	defer cancel()
	ub, cb := user.Bare().String(), contact.Bare().String()
	if ub == cb || contact.Localpart() == "" {
		return
	}
	ros := s.store.Rosters()
	// Outbound: the user's own roster.
	u, uok, err := ros.GetRosterItem(ctx, ub, cb)
	if err != nil {
		s.log.Warn().Err(err).Str("jid", ub).Msg("load roster item")
		return
	}
	if !uok {
		u = storage.RosterItem{JID: cb, Subscription: storage.SubNone}
	}
	before := u
	switch typ {
	case "subscribe":
		if u.Subscription != storage.SubTo && u.Subscription != storage.SubBoth {
			u.Ask = true
		}
	case "unsubscribe":
		u.Subscription = removeSub(u.Subscription, true, false)
		u.Ask = false
	case "subscribed":
		if !u.PendingIn && (u.Subscription == storage.SubFrom || u.Subscription == storage.SubBoth) {
			return // nothing to approve
		}
		if !u.PendingIn {
			return // pre-approval (RFC 6121 §3.4) is not supported
		}
		u.Subscription = addSub(u.Subscription, false, true)
		u.PendingIn = false
	case "unsubscribed":
		u.Subscription = removeSub(u.Subscription, false, true)
		u.PendingIn = false
	}
	if !uok && typ != "subscribe" {
		return
	}
	switch {
	case typ == "unsubscribed" && isPendingOnly(before) && isEmptyItem(u):
		// A denied request whose item only held the request: it was never
		// in the user's visible roster, so it just goes (RFC 6121 §3.2).
		if err := ros.DeleteRosterItem(ctx, ub, cb); err != nil {
			s.log.Warn().Err(err).Str("jid", ub).Msg("delete roster item")
			return
		}
	case !sameItem(before, u) || !uok:
		if err := ros.PutRosterItem(ctx, ub, u); err != nil {
			s.log.Warn().Err(err).Str("jid", ub).Msg("store roster item")
			return
		}
		if !isPendingOnly(u) {
			s.rosterPush(ub, itemXML(u))
		}
	}
	if typ == "subscribed" {
		// the user's resources tell the new subscriber where they are
		defer s.presenceOf(ub, cb, func(b []byte) { s.deliverPresence(contact.Bare(), b) })
	}
	if typ == "unsubscribed" {
		defer s.unavailableTo(ub, cb)
	}
	if !s.domains[contact.Domainpart()] {
		return // no federation; components do not keep rosters
	}
	s.inboundSubscription(ctx, user.Bare(), contact.Bare(), typ)
}

// inboundSubscription applies a subscription stanza from user at the local
// contact's side.
func (s *Server) inboundSubscription(ctx context.Context, user, contact jid.JID, typ string) {
	ub, cb := user.String(), contact.String()
	ros := s.store.Rosters()
	if _, err := s.store.Users().GetCredentials(ctx, cb); err != nil {
		return // no such account: subscription requests to it vanish (RFC 6121 §3.1.3)
	}
	c, cok, err := ros.GetRosterItem(ctx, cb, ub)
	if err != nil {
		s.log.Warn().Err(err).Str("jid", cb).Msg("load roster item")
		return
	}
	if !cok {
		c = storage.RosterItem{JID: ub, Subscription: storage.SubNone}
	}
	before := c
	pres := presenceStanza(ub, cb, typ)
	switch typ {
	case "subscribe":
		if c.Subscription == storage.SubFrom || c.Subscription == storage.SubBoth {
			// Already approved: answer for the contact (RFC 6121 §3.1.3).
			s.subscriptionAnswer(ctx, user, contact)
			return
		}
		c.PendingIn = true
	case "unsubscribe":
		c.Subscription = removeSub(c.Subscription, false, true)
		c.PendingIn = false
	case "subscribed":
		if !c.Ask {
			return
		}
		c.Subscription = addSub(c.Subscription, true, false)
		c.Ask = false
	case "unsubscribed":
		c.Subscription = removeSub(c.Subscription, true, false)
		c.Ask = false
	}
	if !sameItem(before, c) || (!cok && typ == "subscribe") {
		if err := ros.PutRosterItem(ctx, cb, c); err != nil {
			s.log.Warn().Err(err).Str("jid", cb).Msg("store roster item")
			return
		}
		if typ != "subscribe" {
			s.rosterPush(cb, itemXML(c))
		}
	}
	s.deliverPresence(contact, pres)
	if typ == "unsubscribe" {
		s.unavailableTo(cb, ub)
	}
}

// subscriptionAnswer auto-approves user's request to an already approved
// contact.
func (s *Server) subscriptionAnswer(ctx context.Context, user, contact jid.JID) {
	ub, cb := user.String(), contact.String()
	u, ok, err := s.store.Rosters().GetRosterItem(ctx, ub, cb)
	if err != nil || !ok {
		return
	}
	u.Subscription = addSub(u.Subscription, true, false)
	u.Ask = false
	if err := s.store.Rosters().PutRosterItem(ctx, ub, u); err != nil {
		return
	}
	s.rosterPush(ub, itemXML(u))
	s.deliverPresence(user, presenceStanza(cb, ub, "subscribed"))
	s.presenceOf(cb, ub, func(b []byte) { s.deliverPresence(user, b) })
}

// unavailableTo sends unavailable presence from each available resource of
// from to the bare JID to.
func (s *Server) unavailableTo(from, to string) {
	tj, err := jid.Parse(to)
	if err != nil {
		return
	}
	s.presenceOf(from, to, func(b []byte) {
		el, err := wire.Parse(b)
		if err != nil {
			return
		}
		s.deliverPresence(tj, presenceStanza(el.Get("from"), to, "unavailable"))
	})
}

// isPendingOnly reports whether an item exists only to remember an inbound
// subscription request: it is not shown in the roster (RFC 6121 §3.1.3:
// the request is not a roster item) until the user answers.
func isPendingOnly(it storage.RosterItem) bool {
	return it.PendingIn && isEmptyItem(storage.RosterItem{JID: it.JID, Subscription: it.Subscription, Ask: it.Ask, Name: it.Name, Groups: it.Groups})
}

// isEmptyItem reports whether an item carries nothing: no subscription in
// either direction, no pending request, no name, no groups.
func isEmptyItem(it storage.RosterItem) bool {
	return (it.Subscription == "" || it.Subscription == storage.SubNone) && !it.Ask && !it.PendingIn && it.Name == "" && len(it.Groups) == 0
}

func sameItem(a, b storage.RosterItem) bool {
	return a.Subscription == b.Subscription && a.Ask == b.Ask && a.PendingIn == b.PendingIn
}
