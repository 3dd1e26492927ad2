package cluster

// What the cluster learns is handed to three handlers, the way memberlist
// splits its delegates: stanzas other nodes routed here (StanzaHandler),
// changes of the session directory (DirectoryHandler), and the control
// messages the user of this package exchanges between nodes
// (ControlHandler). The server implements them.
//
// Calls come from cluster goroutines (one per link, one for membership
// events) and must not block for long; they are never made with a cluster
// lock held, so they may call back into the Cluster.

// Handlers bundles the handlers of a Cluster; New requires all three.
type Handlers struct {
	Stanzas   StanzaHandler
	Directory DirectoryHandler
	Control   ControlHandler
}

// StanzaHandler receives the stanzas other nodes route here (Route,
// RouteAcked) and those this node routed but could not send.
type StanzaHandler interface {
	// HandleStanza delivers a stanza another node routed here for a local
	// target (full or bare JID). The slice is owned by the handler.
	HandleStanza(to string, stanza []byte)
	// HandleStanzaAcked is HandleStanza for a stanza sent with RouteAcked:
	// the handler calls ack (from any goroutine, once) when the stanza is
	// delivered to a local session or stored, and may not call it at all
	// when it is neither. Must not block.
	HandleStanzaAcked(to string, stanza []byte, ack func())
	// HandleUndelivered returns a stanza that Route accepted but that was
	// still queued when its link died; the server falls back to offline
	// storage or a stanza error.
	HandleUndelivered(to string, stanza []byte)
}

// DirectoryHandler receives the changes of the session directory.
type DirectoryHandler interface {
	// HandleSessionsGone reports remote entries removed because their node
	// died or left, or because a tombstone arrived.
	HandleSessionsGone(gone []Session)
	// HandleSessionUpdate reports a remote entry that appeared or changed.
	HandleSessionUpdate(s Session)
	// HandleConflict asks the server to close the local session fullJID
	// with <conflict/>: another node bound the same full JID later. The
	// cluster has already dropped the local entry (no tombstone: the
	// newer entry replaces it everywhere).
	HandleConflict(fullJID string)
}

// ControlHandler receives the control messages another node sent with
// SendControl or SendControlAcked. The cluster does not interpret them:
// kind and msg are the sender's, and the user of this package defines
// what they mean.
type ControlHandler interface {
	// HandleControl delivers control message msg of kind from node from.
	// The slice is owned by the handler. ack sends the receipt of a
	// message sent with SendControlAcked (and does nothing for one sent
	// with SendControl); the handler calls it once, from any goroutine,
	// when the message is handled. Must not block.
	HandleControl(from string, kind byte, msg []byte, ack func())
}

func (h Handlers) complete() bool {
	return h.Stanzas != nil && h.Directory != nil && h.Control != nil
}
