package server

// PeerSession is a session as the cluster directory knows it.
type PeerSession struct {
	JID       string // full JID
	Node      string // node that owns the session
	Available bool
	Show      string
	Status    string
	Priority  int
	Version   uint64 // directory version: the newest entry of a full JID wins
}

// Cluster is what the router needs from the cluster: where other nodes'
// sessions are and a way to hand them stanzas. Implemented by an adapter
// over cluster.Cluster in cmd/xcollect; nil on a single node.
type Cluster interface {
	// Lookup returns the sessions of bare that live on other nodes.
	Lookup(bare string) []PeerSession
	// Route hands stanza to node for the local target to; an error means it
	// could not be queued for that node.
	Route(node, to string, stanza []byte) error
	// RouteAcked is Route with a receipt: done(nil) once node delivered or
	// stored the stanza, done(err) when that is unknown. done must not
	// block and is not called when RouteAcked returns an error.
	RouteAcked(node, to string, stanza []byte, done func(error)) error
	// SendControl hands control message msg of kind (peer_protocol.go) to
	// node, whose HandlePeerMessage receives it; an error means it could
	// not be queued. A message lost with the link is dropped.
	SendControl(node string, kind byte, msg []byte) error
	// SendControlAcked is SendControl with a receipt, as RouteAcked.
	SendControlAcked(node string, kind byte, msg []byte, done func(error)) error
	// Nodes returns the names of the alive nodes, this one included,
	// sorted.
	Nodes() []string
	// Reachable reports whether node is alive and linked to this one.
	Reachable(node string) bool
	// Publish announces a local session (bound or presence changed).
	Publish(PeerSession)
	// Unpublish removes a local session from the directory.
	Unpublish(full string)
}

// peerInfo describes s for the cluster directory.
func (s *Session) peerInfo() PeerSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	return PeerSession{JID: s.full, Available: s.available, Show: s.show, Status: s.status, Priority: s.priority}
}
