package cluster

import "errors"

// Sentinel errors returned by Cluster methods. Match them with errors.Is.
var (
	// ErrUnknownNode is returned by Route when the target node is not an
	// alive member of the cluster.
	ErrUnknownNode = errors.New("cluster: unknown or dead node")
	// ErrLinkDown is returned by Route when the node is alive but no link to
	// it is established at the moment.
	ErrLinkDown = errors.New("cluster: link to node is down")
	// ErrQueueFull is returned by Route when the link's send queue is full.
	ErrQueueFull = errors.New("cluster: link queue full")
	// ErrMetaTooLarge is returned by New when the encoded node metadata
	// would not fit memberlist's 512-byte limit.
	ErrMetaTooLarge = errors.New("cluster: node metadata exceeds memberlist limit")
	// ErrClosed is returned after Shutdown began.
	ErrClosed = errors.New("cluster: shut down")
	// ErrAuth is returned by the link handshake when the peer failed the
	// HMAC challenge or the TLS certificate check (another secret key), or
	// when one side has a secret key and the other has none.
	ErrAuth = errors.New("cluster: link authentication failed")
	// ErrNotMember is returned by the link handshake when the acceptor does
	// not count the dialer among the current members (not joined yet, left,
	// removed) or the link comes from another address than the member's.
	// A dial loop retries: in the join race memberlist soon has the member.
	ErrNotMember = errors.New("cluster: link refused: peer is not a current member")
	// ErrNoKey is returned by New for a configuration without a secret key
	// that does not set Insecure.
	ErrNoKey = errors.New("cluster: no secret key")
	// ErrWeakKey is returned by New for a secret key that cannot be random.
	ErrWeakKey = errors.New("cluster: secret key is not random")
)
