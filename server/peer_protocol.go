package server

import (
	"encoding/json"
	"fmt"
)

// The protocol between the nodes of a cluster, as far as the server speaks
// it. Stanzas for a user on another node travel as the cluster's stanza
// frames (Cluster.Route, RouteAcked; received by DeliverFromPeer,
// DeliverFromPeerAcked in peers.go). Everything else is one of the control
// messages below, sent with Cluster.SendControl or SendControlAcked (a
// control frame with the kind byte, then the message as JSON) and received
// by HandlePeerMessage, which decodes it and calls the typed handler of
// its kind. All nodes of a cluster run the same version.
//
//	kind                 message          handled by
//	peerTakeoverRequest  takeoverReq      takeoverRequested (sm_takeover.go): hand a session over, or look for a standby's copy
//	peerTakeoverAnswer   takeoverResp     takeoverAnswered (sm_takeover.go): the session's state, or h, or nothing
//	peerDropMoved        dropMoved        announceGone (sm_takeover.go): a handed-over session nobody took
//	peerStandbyUpdate    standbyMsg       standbyUpdated (sm_standby_copy.go), and resync on the owner (sm_standby_owner.go)
//	peerForward          forwardedStanza  deliverFromPeer (peers.go): a stanza for a session that moved to the receiver

// peerKind names a control message between nodes.
type peerKind byte

const (
	peerTakeoverRequest peerKind = 1
	peerTakeoverAnswer  peerKind = 2
	peerDropMoved       peerKind = 3
	peerStandbyUpdate   peerKind = 4
	peerForward         peerKind = 5
)

// String names the kind in logs.
func (k peerKind) String() string {
	names := [...]string{
		peerTakeoverRequest: "takeover-request",
		peerTakeoverAnswer:  "takeover-answer",
		peerDropMoved:       "drop-moved",
		peerStandbyUpdate:   "standby-update",
		peerForward:         "forward",
	}
	if int(k) < len(names) && names[k] != "" {
		return names[k]
	}
	return fmt.Sprintf("peer-message(%d)", byte(k))
}

// takeoverReq asks a node for session ID of Bare: its owner hands it over
// (sm_takeover.go); with Replica, a standby hands over its copy.
type takeoverReq struct {
	ID   string `json:"id"`
	Bare string `json:"bare"`
	H    uint32 `json:"h"`
	From string `json:"from"` // requesting node
	Req  string `json:"req"`
	// Replica asks for a standby's copy: the owner is gone or does not
	// know the session.
	Replica bool `json:"replica,omitempty"`
	// OwnerUnreachable: the requester could not reach the owner (its
	// link is down): with the standby's own view, enough to hand a copy
	// over before the membership declares the owner dead.
	OwnerUnreachable bool `json:"owner_unreachable,omitempty"`
}

// takeoverResp answers a takeoverReq: OK with the session's state, or
// HSet with the handled count of a session that ended, or neither.
type takeoverResp struct {
	Req             string   `json:"req"`
	From            string   `json:"from"` // the owner node
	OK              bool     `json:"ok"`
	Replica         bool     `json:"replica,omitempty"` // from a standby's copy
	HSet            bool     `json:"h_set,omitempty"`
	H               uint32   `json:"h,omitempty"` // handled count when !OK
	Full            string   `json:"full,omitempty"`
	InH             uint32   `json:"in_h"`
	standbyPresence          // the session's presence (fields inline in JSON)
	Resend          [][]byte `json:"resend,omitempty"`
}

// standbyMsg is one update of a session's copy on its standby (Op says
// which: see sm_standby_owner.go), or a message about all of an owner's
// copies (hello, keep, bye), or resync from the standby to the owner.
type standbyMsg struct {
	Op    string           `json:"op"`
	ID    string           `json:"id"`
	Owner string           `json:"owner"`
	Epoch int64            `json:"epoch"`
	Full  string           `json:"full,omitempty"`
	Base  uint32           `json:"base,omitempty"` // open: outbound sequence number before Out[0]
	Out   [][]byte         `json:"out,omitempty"`  // open: the FIFO; out: one stanza
	InH   uint32           `json:"in_h,omitempty"`
	H     uint32           `json:"h,omitempty"` // ack and in
	Pres  *standbyPresence `json:"pres,omitempty"`
	Seq   uint64           `json:"seq,omitempty"` // open: the owner's snapshot number; keep: the last one before IDs were listed
	IDs   []string         `json:"ids,omitempty"` // keep
}

// standbyPresence is a session's presence, as copied and handed over.
type standbyPresence struct {
	Available bool   `json:"available,omitempty"`
	Priority  int    `json:"priority,omitempty"`
	Show      string `json:"show,omitempty"`
	Status    string `json:"status,omitempty"`
	Presence  []byte `json:"presence,omitempty"`
	Roster    bool   `json:"roster,omitempty"`
}

// dropMoved tells the node that handed session Full over that nobody
// took it: that node announces it gone.
type dropMoved struct {
	Full string `json:"full"`
}

// forwardedStanza is a stanza one node forwards to another because its
// target session moved there (XEP-0198 resumption on another node) while
// the sender's directory still named the old node. It is never forwarded
// again.
type forwardedStanza struct {
	To     string `json:"to"`
	Stanza []byte `json:"stanza"`
}

// sendPeer sends control message v of kind to node.
func (s *Server) sendPeer(node string, kind peerKind, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s for %s: %w", kind, node, err)
	}
	return s.cluster.SendControl(node, byte(kind), b)
}

// sendPeerAcked sends control message v of kind to node with a receipt
// (see Cluster.SendControlAcked): done runs unless an error is returned.
func (s *Server) sendPeerAcked(node string, kind peerKind, v any, done func(error)) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s for %s: %w", kind, node, err)
	}
	return s.cluster.SendControlAcked(node, byte(kind), b, done)
}

// HandlePeerMessage takes a control message another node sent: it decodes
// msg by kind and calls its handler. ack sends the receipt: once the
// message is handled (a forwarded stanza: once it is queued for a local
// session, forwarded, or stored). Called on a cluster link's reader: the
// handlers that wait or write to the store do it on a server goroutine.
func (s *Server) HandlePeerMessage(from string, kind byte, msg []byte, ack func()) {
	k := peerKind(kind)
	switch k {
	case peerTakeoverRequest:
		var req takeoverReq
		if s.decodePeer(from, k, msg, &req) {
			s.takeoverRequested(req)
		}
	case peerTakeoverAnswer:
		var resp takeoverResp
		if s.decodePeer(from, k, msg, &resp) {
			s.takeoverAnswered(resp)
		}
	case peerDropMoved:
		var m dropMoved
		if s.decodePeer(from, k, msg, &m) {
			s.announceGone(m.Full)
		}
	case peerStandbyUpdate:
		var m standbyMsg
		if s.decodePeer(from, k, msg, &m) {
			s.standbyUpdated(&m)
		}
	case peerForward:
		var m forwardedStanza
		if s.decodePeer(from, k, msg, &m) {
			s.deliverFromPeer(m.To, m.Stanza, ack, true)
			return // deliverFromPeer acks
		}
	default:
		s.log.Warn().Str("node", from).Stringer("kind", k).Msg("unknown node message dropped")
	}
	ack()
}

// decodePeer decodes msg into v; false (logged) when it is not valid.
func (s *Server) decodePeer(from string, kind peerKind, msg []byte, v any) bool {
	if err := json.Unmarshal(msg, v); err != nil {
		s.log.Warn().Err(err).Str("node", from).Stringer("kind", kind).Msg("bad node message dropped")
		return false
	}
	return true
}
