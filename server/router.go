package server

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/storage"
)

// stanza is a routed stanza: its header parsed, its bytes stamped.
type stanza struct {
	name string // message, presence, iq
	typ  string
	id   string
	from jid.JID
	to   jid.JID // the zero JID when the stanza had no 'to'
	raw  []byte  // from (and to where set) stamped
	el   *wire.Element
}

func (st *stanza) hasTo() bool { return st.to.Domainpart() != "" }

// reply returns an error reply to st from the entity it was addressed to.
func (st *stanza) errorReply(errType, cond, text string) []byte {
	from := st.to.String()
	if !st.hasTo() {
		from = st.from.Bare().String()
	}
	return wire.ErrorStanza(st.name, st.id, from, st.from.String(), errType, cond, text)
}

// noop is the completion of a stanza nobody waits for.
func noop() {}

// handleFromClient takes a stanza a local client sent. done is called once
// the stanza is handled: durable in a store, handed to an online local
// session or a peer node, or answered with an error (XEP-0198 counts it
// then).
func (s *Server) handleFromClient(sess *Session, el *wire.Element, done func()) {
	st := &stanza{name: el.Name.Local, typ: el.Get("type"), id: el.Get("id"), from: sess.jid, el: el}
	if to := el.Get("to"); to != "" {
		j, err := jid.Parse(to)
		if err != nil {
			sess.send(wire.ErrorStanza(st.name, st.id, "", sess.full, "modify", "jid-malformed", "invalid 'to' address"), true)
			done()
			return
		}
		st.to = j
	}
	// RFC 6120 §8.1.2.1: the server stamps the sender's full JID.
	st.raw = wire.Stamp(el.Raw, sess.full, "")
	switch st.name {
	case "message":
		if !st.hasTo() {
			// RFC 6120 §10.3: handled as addressed to the account's bare
			// JID, and delivered saying so.
			st.to = sess.jid.Bare()
			st.raw = wire.Stamp(el.Raw, sess.full, st.to.String())
		}
		s.route(st, done)
	case "presence":
		s.handlePresence(sess, st, done)
	case "iq":
		s.handleIQ(sess, st, done)
	}
}

// route hands st to its destination: a component queue, the server itself,
// a local user, or an error for a domain we do not serve.
func (s *Server) route(st *stanza, done func()) {
	switch s.destinationOf(st.to) {
	case toComponent:
		s.deliverToComponent(st, st.to.Domainpart(), done)
	case toRemote:
		s.bounce(st, "cancel", "remote-server-not-found", "this server does not federate with other domains")
		done()
	case toServer:
		// Addressed to the server itself: IQs are answered by handleIQ;
		// messages and presence to the server are dropped (RFC 6121 §8.5.1).
		if st.name == "iq" {
			s.handleServerIQ(st)
		}
		done()
	default:
		s.deliverToUser(st, done)
	}
}

// deliverToComponent puts st into the durable queue of component.
func (s *Server) deliverToComponent(st *stanza, component string, done func()) {
	item := storage.QueueItem{
		Component: component,
		Sender:    st.from.Bare().String(),
		From:      st.from.String(),
		StanzaID:  st.id,
		Stanza:    st.raw,
	}
	if st.name == "message" {
		// Only reports whose sender asserts a unique id are deduplicated:
		// stanza ids repeat across streams. Within one XEP-0198 session the
		// exact h of <resumed/> keeps the client from resending what was
		// queued, so the session needs no dedupe key of its own.
		item.OriginID = originID(st.raw)
	}
	s.queue.Submit(item, func(res storage.EnqueueResult, err error) {
		switch {
		case err != nil:
			s.log.Warn().Err(err).Str("component", component).Str("jid", item.From).Msg("queue write failed")
			s.bounce(st, "wait", "resource-constraint", "the queue could not store the stanza; retry later")
		case res == storage.Full:
			s.bounce(st, "wait", "resource-constraint", "the queue of "+component+" is full; retry later")
		}
		done()
	})
}

// bounce sends an error reply for st to its sender, unless st is itself an
// error (RFC 6120 §8.3.1) or a result.
func (s *Server) bounce(st *stanza, errType, cond, text string) {
	if st.typ == "error" || (st.name == "iq" && st.typ == "result") {
		return
	}
	if s.queue != nil && s.queue.IsComponent(st.from.Domainpart()) {
		s.queueError(st.from.Domainpart(), st, errType, cond, text)
		return
	}
	s.deliverTo(st.from, st.errorReply(errType, cond, text))
}

// deliverTo hands raw to the full JID j, wherever its session lives, and
// reports whether it found one.
func (s *Server) deliverTo(j jid.JID, raw []byte) bool {
	bare := j.Bare().String()
	if sess := s.sessions.get(bare, j.Resourcepart()); sess != nil {
		sess.send(raw, true)
		return true
	}
	if s.cluster != nil {
		for _, p := range s.cluster.Lookup(bare) {
			if p.JID == j.String() {
				return s.cluster.Route(p.Node, p.JID, raw) == nil
			}
		}
	}
	return false
}

// resource is one bound resource of a user, on this node or another.
type resource struct {
	full      string
	available bool
	priority  int
	local     *Session
	node      string
	version   uint64 // directory version of a remote entry
}

// resourcesOf returns every bound resource of bare across the cluster.
func (s *Server) resourcesOf(bare string) []resource {
	var out []resource
	for _, sess := range s.sessions.resources(bare) {
		sess.mu.Lock()
		out = append(out, resource{full: sess.full, available: sess.available, priority: sess.priority, local: sess})
		sess.mu.Unlock()
	}
	if s.cluster != nil {
		// A session that moved (resumed on another node) can briefly be
		// listed by its old node too: a local session wins, then the newest
		// directory entry.
		newest := map[string]int{}
		for i, r := range out {
			newest[r.full] = i
		}
		for _, p := range s.cluster.Lookup(bare) {
			r := resource{full: p.JID, available: p.Available, priority: p.Priority, node: p.Node, version: p.Version}
			i, seen := newest[p.JID]
			switch {
			case !seen:
				newest[p.JID] = len(out)
				out = append(out, r)
			case out[i].local == nil && out[i].version < p.Version:
				out[i] = r
			}
		}
	}
	return out
}

// withMoved adds to res the session of full JID that this node recently
// handed over to another node, when the directory does not list it yet.
func (s *Server) withMoved(res []resource, full string) []resource {
	for _, r := range res {
		if r.full == full {
			return res
		}
	}
	if node := s.smDetached.movedFullTo(full); node != "" && node != s.cfg.NodeName {
		res = append(res, resource{full: full, node: node, available: true})
	}
	return res
}

// send hands raw to resource r; false if a peer node could not take it.
func (s *Server) sendTo(r resource, raw []byte) bool {
	if r.local != nil {
		r.local.send(raw, true)
		return true
	}
	return s.cluster.Route(r.node, r.full, raw) == nil
}

// deliverToUser routes a message or IQ to a local account (RFC 6121 §8.5).
func (s *Server) deliverToUser(st *stanza, done func()) {
	bare := st.to.Bare().String()
	res := s.resourcesOf(bare)
	if st.to.Resourcepart() != "" {
		res = s.withMoved(res, st.to.String())
		for _, r := range res {
			if r.full == st.to.String() {
				s.deliverAll([]resource{r}, func(resource) []byte { return st.raw }, done, func(done func()) {
					// the peer node could not confirm it
					if st.name == "message" && st.typ != "error" && st.typ != "groupchat" && st.typ != "headline" {
						s.storeOffline(st, bare, done)
						return
					}
					if st.name == "iq" {
						s.bounce(st, "cancel", "service-unavailable", "") // RFC 6120 §8.2.3: always an answer
					}
					done()
				})
				return
			}
		}
		// No such resource (RFC 6121 §8.5.3.2): IQs fail; messages of type
		// normal/chat/headline are treated as addressed to the bare JID.
		if st.name == "iq" || st.typ == "groupchat" || st.typ == "error" {
			s.bounce(st, "cancel", "service-unavailable", "")
			done()
			return
		}
	}
	if st.name == "iq" {
		// An IQ to a bare JID is answered by the server on behalf of the
		// account; the only one we handle is the user's own roster, which
		// handleIQ catches before routing.
		s.bounce(st, "cancel", "service-unavailable", "")
		done()
		return
	}
	switch st.typ {
	case "error":
		done()
		return
	case "groupchat":
		s.bounce(st, "cancel", "service-unavailable", "")
		done()
		return
	}
	// Available resources with non-negative priority; normal and chat go to
	// those with the highest priority, headline to all (RFC 6121 §8.5.2.1).
	best := -1
	for _, r := range res {
		if r.available && r.priority >= 0 && r.priority > best {
			best = r.priority
		}
	}
	var targets []resource
	if best >= 0 {
		for _, r := range res {
			if r.available && r.priority >= 0 && (st.typ == "headline" || r.priority == best) {
				targets = append(targets, r)
			}
		}
	}
	// The stanza keeps the 'to' its sender wrote (the bare JID, or a full
	// JID that is not bound): the receiving client learns how it was
	// addressed, as with Prosody and ejabberd.
	s.deliverAll(targets, func(resource) []byte { return st.raw }, done, func(done func()) {
		if st.typ == "headline" {
			done() // headlines are not stored (RFC 6121 §8.5.2.1.1)
			return
		}
		s.storeOffline(st, bare, done)
	})
}

// deliverAll hands a stanza to each target and calls done once every one
// was delivered: a local session at once, a session on another node when
// that node confirms (cluster receipt). If none of them could be
// delivered, fallback runs instead (on a server goroutine) and must call
// done itself. This is what lets XEP-0198 count a stanza for a user on
// another node only once that node has it.
func (s *Server) deliverAll(targets []resource, raw func(resource) []byte, done func(), fallback func(done func())) {
	if len(targets) == 0 {
		fallback(done)
		return
	}
	var left atomic.Int32
	var delivered atomic.Bool
	left.Store(int32(len(targets)))
	finish := func(ok bool) {
		if ok {
			delivered.Store(true)
		}
		if left.Add(-1) != 0 {
			return
		}
		if delivered.Load() {
			done()
		} else {
			s.offload(func() { fallback(done) })
		}
	}
	for _, r := range targets {
		if r.local != nil {
			r.local.sendThen(raw(r), func() { finish(true) })
			continue
		}
		if err := s.cluster.RouteAcked(r.node, r.full, raw(r), func(err error) { finish(err == nil) }); err != nil {
			finish(false)
		}
	}
}

// storeOffline keeps a message for an account with no available resource.
func (s *Server) storeOffline(st *stanza, bare string, done func()) {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	if _, err := s.store.Users().GetCredentials(ctx, bare); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			s.bounce(st, "cancel", "service-unavailable", "")
		} else {
			s.log.Warn().Err(err).Str("jid", bare).Msg("look up account")
			s.bounce(st, "wait", "internal-server-error", "")
		}
		done()
		return
	}
	err := s.store.Offline().StoreOffline(ctx, bare, st.raw, s.cfg.OfflineLimit)
	switch {
	case errors.Is(err, storage.ErrLimit):
		// XEP-0160 §3: a full offline store answers service-unavailable.
		s.bounce(st, "cancel", "service-unavailable", "the recipient's offline storage is full")
	case err != nil:
		s.log.Warn().Err(err).Str("jid", bare).Msg("store offline message")
		s.bounce(st, "wait", "internal-server-error", "")
	default:
		s.log.Debug().Str("jid", bare).Str("id", st.id).Msg("stored offline message")
	}
	done()
}

// undeliverableAll is undeliverable for each of stanzas, all for full.
func (s *Server) undeliverableAll(full string, stanzas [][]byte) {
	for _, b := range stanzas {
		s.undeliverable(full, b)
	}
}

// undeliverable handles a stanza a session took but could not write (it
// ended first): messages go to offline storage, nothing is lost silently.
func (s *Server) undeliverable(full string, raw []byte) {
	el, err := parseElement(raw)
	if err != nil {
		return
	}
	if el.Name.Local == "iq" && (el.Get("type") == "get" || el.Get("type") == "set") {
		// an IQ request always gets an answer (RFC 6120 §8.2.3)
		if from, err := jid.Parse(el.Get("from")); err == nil {
			st := &stanza{name: "iq", typ: el.Get("type"), id: el.Get("id"), from: from, el: el}
			if to, err := jid.Parse(full); err == nil {
				st.to = to
			}
			s.bounce(st, "cancel", "service-unavailable", "")
		}
		return
	}
	if el.Name.Local != "message" {
		return
	}
	j, err := jid.Parse(full)
	if err != nil {
		return
	}
	typ := el.Get("type")
	if typ == "error" || typ == "groupchat" || typ == "headline" {
		return
	}
	from, _ := jid.Parse(el.Get("from"))
	st := &stanza{name: "message", typ: typ, id: el.Get("id"), from: from, to: j.Bare(), raw: raw, el: el}
	s.storeOffline(st, j.Bare().String(), noop)
}

// parseElement decodes one stanza's header from its bytes.
func parseElement(raw []byte) (*wire.Element, error) { return wire.Parse(raw) }
