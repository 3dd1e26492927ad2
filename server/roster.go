package server

import (
	"context"
	"encoding/xml"
	"time"

	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/storage"
)

const nsRoster = "jabber:iq:roster"

type rosterQuery struct {
	XMLName xml.Name        `xml:"jabber:iq:roster query"`
	Ver     string          `xml:"ver,attr,omitempty"`
	Items   []rosterItemXML `xml:"item"`
}

type rosterItemXML struct {
	JID          string   `xml:"jid,attr"`
	Name         string   `xml:"name,attr,omitempty"`
	Subscription string   `xml:"subscription,attr,omitempty"`
	Ask          string   `xml:"ask,attr,omitempty"`
	Groups       []string `xml:"group"`
}

func itemXML(it storage.RosterItem) rosterItemXML {
	x := rosterItemXML{JID: it.JID, Name: it.Name, Subscription: it.Subscription, Groups: it.Groups}
	if x.Subscription == "" {
		x.Subscription = storage.SubNone
	}
	if it.Ask {
		x.Ask = "subscribe"
	}
	return x
}

func (s *Server) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, 30*time.Second)
}

// rosterIQ is the IQ table's roster service: handleRoster replies itself.
func (s *Server) rosterIQ(sess *Session, st *stanza) []byte {
	s.handleRoster(sess, st)
	return nil
}

// handleRoster answers a roster get or set from the owner (RFC 6121 §2).
func (s *Server) handleRoster(sess *Session, st *stanza) {
	var q struct {
		Query rosterQuery `xml:"jabber:iq:roster query"`
	}
	if err := xml.Unmarshal(st.el.Raw, &q); err != nil {
		sess.send(st.errorReply("modify", "bad-request", ""), true)
		return
	}
	ctx, cancel := s.storeCtx()
	defer cancel()
	owner := sess.bare
	switch st.typ {
	case "get":
		items, err := s.store.Rosters().GetRoster(ctx, owner)
		if err != nil {
			s.log.Warn().Err(err).Str("jid", owner).Msg("load roster")
			sess.send(st.errorReply("wait", "internal-server-error", ""), true)
			return
		}
		out := rosterQuery{}
		for _, it := range items {
			if !isPendingOnly(it) {
				out.Items = append(out.Items, itemXML(it))
			}
		}
		sess.mu.Lock()
		sess.rosterRequested = true
		sess.copyPresenceLocked()
		sess.mu.Unlock()
		sess.send(iqResult(st, out), true)
	case "set":
		if len(q.Query.Items) != 1 {
			sess.send(st.errorReply("modify", "bad-request", "a roster set carries exactly one item"), true)
			return
		}
		x := q.Query.Items[0]
		cj, err := jid.Parse(x.JID)
		if err != nil {
			sess.send(st.errorReply("modify", "jid-malformed", ""), true)
			return
		}
		contact := cj.Bare().String()
		if contact == owner {
			sess.send(st.errorReply("cancel", "not-allowed", "you cannot add yourself"), true)
			return
		}
		if x.Subscription == "remove" {
			s.rosterRemove(ctx, sess, owner, contact)
			sess.send(iqResult(st, nil), true)
			return
		}
		if x.Subscription != "" && x.Subscription != "none" && x.Subscription != "both" && x.Subscription != "to" && x.Subscription != "from" {
			sess.send(st.errorReply("modify", "bad-request", "invalid subscription"), true)
			return
		}
		item, _, err := s.store.Rosters().GetRosterItem(ctx, owner, contact)
		if err != nil {
			sess.send(st.errorReply("wait", "internal-server-error", ""), true)
			return
		}
		item.JID, item.Name, item.Groups = contact, x.Name, x.Groups
		if item.Subscription == "" {
			item.Subscription = storage.SubNone
		}
		if err := s.store.Rosters().PutRosterItem(ctx, owner, item); err != nil {
			s.log.Warn().Err(err).Str("jid", owner).Msg("store roster item")
			sess.send(st.errorReply("wait", "internal-server-error", ""), true)
			return
		}
		sess.send(iqResult(st, nil), true)
		s.rosterPush(owner, itemXML(item))
	default:
		sess.send(st.errorReply("modify", "bad-request", ""), true)
	}
}

// rosterRemove deletes contact from owner's roster, cancelling both
// subscription directions first (RFC 6121 §2.5.2).
func (s *Server) rosterRemove(ctx context.Context, sess *Session, owner, contact string) {
	item, ok, err := s.store.Rosters().GetRosterItem(ctx, owner, contact)
	if err != nil || !ok {
		return
	}
	ownerJID, _ := jid.Parse(owner)
	contactJID, _ := jid.Parse(contact)
	if item.Subscription == storage.SubTo || item.Subscription == storage.SubBoth || item.Ask {
		s.subscription(ownerJID, contactJID, "unsubscribe", "")
	}
	if item.Subscription == storage.SubFrom || item.Subscription == storage.SubBoth || item.PendingIn {
		s.subscription(ownerJID, contactJID, "unsubscribed", "")
	}
	if err := s.store.Rosters().DeleteRosterItem(ctx, owner, contact); err != nil {
		s.log.Warn().Err(err).Str("jid", owner).Msg("delete roster item")
		return
	}
	s.rosterPush(owner, rosterItemXML{JID: contact, Subscription: "remove"})
}

// rosterPush sends an item to every resource of owner (RFC 6121 §2.1.6).
func (s *Server) rosterPush(owner string, it rosterItemXML) {
	for _, r := range s.resourcesOf(owner) {
		if r.local != nil {
			r.local.mu.Lock()
			want := r.local.rosterRequested
			r.local.mu.Unlock()
			if !want {
				continue
			}
		}
		b := []byte("<iq type='set'")
		b = wire.AppendAttr(b, "id", "push-"+randomID(4))
		b = wire.AppendAttr(b, "to", r.full)
		b = append(b, '>')
		x, _ := xml.Marshal(rosterQuery{Items: []rosterItemXML{it}}) // plain struct: cannot fail
		b = append(b, x...)
		b = append(b, "</iq>"...)
		s.sendTo(r, b)
	}
}

// iqResult builds the result of IQ st with an optional payload.
func iqResult(st *stanza, payload any) []byte {
	b := []byte("<iq type='result'")
	if st.id != "" {
		b = wire.AppendAttr(b, "id", st.id)
	}
	if st.hasTo() {
		b = wire.AppendAttr(b, "from", st.to.String())
	}
	b = wire.AppendAttr(b, "to", st.from.String())
	if payload == nil {
		return append(b, "/>"...)
	}
	b = append(b, '>')
	switch p := payload.(type) {
	case []byte:
		b = append(b, p...)
	default:
		x, err := xml.Marshal(p)
		if err == nil {
			b = append(b, x...)
		}
	}
	return append(b, "</iq>"...)
}
