package server

import (
	"bytes"
	"encoding/xml"
	"slices"

	"xcollect.dev/xcollect/internal/wire"
)

// iqTarget says whom an IQ service answers for.
type iqTarget uint8

const (
	// forAccount: an IQ a client sends to its own bare JID or with no to
	// (RFC 6120 §10.3.3): roster, legacy session, ping of the account.
	forAccount iqTarget = iota
	// forServer: an IQ to a served domain, or with no to when no account
	// service takes it.
	forServer
)

// iqService is one row of the IQ table: IQs of one of types whose payload
// is in namespace ns, addressed to target, are answered by handle.
type iqService struct {
	types   []string // "get", "set"
	ns      string   // namespace of the payload element
	target  iqTarget
	feature string // what disco#info lists for it; "" for nothing
	// handle answers st and returns the reply; nil means handle replied
	// itself. sess is the sender's session for forAccount services and nil
	// for forServer ones (the sender may be a component or a peer's user).
	handle func(sess *Session, st *stanza) []byte
}

var (
	iqGet    = []string{"get"}
	iqGetSet = []string{"get", "set"}
)

// iqTable is every IQ the server itself answers. Adding one is a row here
// (built in Server.iqServices) and a function; disco#info is derived from
// the table, so it lists only what is implemented.
type iqTable struct {
	services []iqService
	// otherFeatures are disco#info features that are not IQ services
	// (stream features, message handling).
	otherFeatures []string
}

// iqServices is the server's IQ table.
func (s *Server) iqServices() iqTable {
	return iqTable{
		services: []iqService{
			{types: iqGetSet, ns: nsRoster, target: forAccount, feature: nsRoster, handle: s.rosterIQ},
			{types: iqGetSet, ns: wire.NSSession, target: forAccount, feature: wire.NSSession, handle: emptyResult},
			{types: iqGetSet, ns: nsPing, target: forAccount, handle: emptyResult},
			{types: iqGet, ns: nsPing, target: forServer, feature: nsPing, handle: emptyResult},
			{types: iqGet, ns: nsDiscoInfo, target: forServer, feature: nsDiscoInfo, handle: s.discoInfo},
			{types: iqGet, ns: nsDiscoItems, target: forServer, feature: nsDiscoItems, handle: s.discoItems},
			{types: iqGet, ns: nsVersion, target: forServer, feature: nsVersion, handle: s.version},
		},
		otherFeatures: []string{nsStreamManagement, featureOffline},
	}
}

// lookup returns the service for an IQ of type typ with payload namespace
// ns addressed to target, or nil.
func (t *iqTable) lookup(target iqTarget, typ, ns string) *iqService {
	for i := range t.services {
		sv := &t.services[i]
		if sv.target == target && sv.ns == ns && slices.Contains(sv.types, typ) {
			return sv
		}
	}
	return nil
}

// features returns the disco#info features of the table, sorted, once each.
func (t *iqTable) features() []string {
	fs := slices.Clone(t.otherFeatures)
	for _, sv := range t.services {
		if sv.feature != "" {
			fs = append(fs, sv.feature)
		}
	}
	slices.Sort(fs)
	return slices.Compact(fs)
}

// emptyResult answers an IQ with an empty result.
func emptyResult(_ *Session, st *stanza) []byte { return iqResult(st, nil) }

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
		if !st.hasTo() || s.destinationOf(st.to) == toServer {
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
	if st.hasTo() && st.to.String() != sess.bare {
		s.route(st, done)
		return
	}
	switch sv := s.iqs.lookup(forAccount, st.typ, payloadName(st.el.Raw).Space); {
	case sv != nil:
		if reply := sv.handle(sess, st); reply != nil {
			sess.send(reply, true)
		}
	case !st.hasTo():
		s.handleServerIQ(st)
	default:
		sess.send(st.errorReply("cancel", "service-unavailable", ""), true)
	}
	done()
}

// handleServerIQ answers an IQ addressed to the server (or to no one).
func (s *Server) handleServerIQ(st *stanza) {
	if st.typ != "get" && st.typ != "set" {
		return
	}
	reply := st.errorReply("cancel", "service-unavailable", "")
	if sv := s.iqs.lookup(forServer, st.typ, payloadName(st.el.Raw).Space); sv != nil {
		reply = sv.handle(nil, st)
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
