// Package cluster is an xcollect node's view of the cluster: membership and
// failure detection (hashicorp/memberlist), node metadata (advertised
// addresses and load, for steering to the least-loaded node), the
// cluster-wide session directory (full JID → owning node, presence,
// version), and the persistent node-to-node links that carry directory
// deltas, routed stanzas and the server's control messages (opaque here:
// a kind byte and bytes, handed to the ControlHandler).
//
// What it owns:
//   - memberlist: join by seeds or DNS name, AES-GCM gossip with the secret
//     key, label, dead-node detection; its logs go to zerolog (logger.go).
//   - The session directory (directory.go): each node is authoritative for
//     its own sessions. Deltas travel on links, never on memberlist
//     broadcasts (they lose messages). A link that (re)connects starts with a
//     snapshot of the sender's sessions. memberlist push/pull carries a small
//     per-owner digest (count, hash, newest version, merge.go); a node whose
//     view differs asks the owner for a snapshot. Versions come from a hybrid
//     logical clock, so the newest entry wins, a restarted node's entries
//     beat its stale ones, and a later bind of the same full JID on another
//     node kicks the older session (DirectoryHandler.HandleConflict, RFC 6120
//     §7.7.2.2 "replace old").
//   - Links (link.go, links.go, linktls.go, handshake.go, frame.go,
//     receive.go): one TCP connection per peer
//     pair, dialed by the node with the smaller name. With a secret key it
//     is TLS 1.3 (encrypted) with an Ed25519 certificate derived from the
//     key and pinned by both sides, so a node with another key cannot
//     connect; inside it, an HMAC-SHA256 challenge over both names and
//     nonces names the peer. The acceptor then admits only a current
//     memberlist member, linking from that member's address (it waits up
//     to memberGrace for a member that is still joining; the dialer
//     retries otherwise), so neither a key holder that never joined nor a
//     node that left or was removed gets a link. A key is required (New
//     refuses none, and text that cannot be random); Insecure, for tests
//     only, allows none: gossip and links are then plain. Gossip and the
//     link listen on the configured address, never on all interfaces
//     unless told to, and links are dialed from it. Frames are
//     length-prefixed with a type byte (frame.go lists them); one writer
//     goroutine per link with a bounded queue.
//   - Load (load.go): PublishLoad samples the node's load, which memberlist
//     metadata advertises; ShouldSteer and LeastLoaded read it.
//
// What it must not do: block a stanza path on gossip (Route only queues),
// import other xcollect packages, or know about XML.
//
// Read first: Cluster (cluster.go: lifecycle) and Handlers (handlers.go),
// then Session and directory (directory.go), local.go (this node's
// sessions), route.go (Route, SendControl), then link (link.go). Goroutines: every one is started by
// Cluster.spawn and counted; memberlist callbacks only queue work for the
// events goroutine (events.go). Lock order: Cluster.localMu, then
// Cluster.mu, then link.mu; directory.mu is a leaf.
package cluster
