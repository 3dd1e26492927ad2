// Package server is the client side of an xcollect node: the c2s listeners
// (STARTTLS on 5222, direct TLS on 5223, XEP-0368), stream negotiation (RFC
// 6120: TLS, SASL SCRAM-SHA-256/SCRAM-SHA-1/PLAIN, resource binding, the
// legacy session IQ), XEP-0198 stream management, sessions with their read
// and write loops, the router that hands each stanza to a local session, the
// component queue, a peer node or offline storage, and the built-in services:
// rosters and presence subscriptions (RFC 6121), offline messages (XEP-0160),
// ping (XEP-0199), service discovery (XEP-0030) and version (XEP-0092).
//
// It knows no SQL and no memberlist: stores come in as storage.Store, the
// component queue as Queuer and the cluster as Cluster, small interfaces
// defined here.
//
// The c2s path reads as a chain of files: listener.go (accept) → c2s.go
// (negotiation) → sasl.go → session.go (read/write loops) → router.go
// (destination.go says what a 'to' points at) → sm_ack.go (XEP-0198).
// IQs the server answers itself are one table in iq.go (iq_ping.go,
// iq_disco.go, iq_version.go, roster.go); processors' stanzas come in
// through component_route.go. From other nodes: stanzas and directory
// events in peers.go, control messages (takeover, standby copies,
// forwarding) in peer_protocol.go. Read first: Server, Session, Config.
//
// XEP-0198 stream management, file by file: sm_ack.go (enable, counters,
// <a/> and <r/>), sm_resume.go and sm_detached.go (detach, <resume/> on
// this node, the table of resumable and ended sessions), sm_takeover.go
// (resumption on another node: the owner hands the session over),
// sm_standby_owner.go (this node's sessions copied to a standby node) and
// sm_standby_copy.go (the copies this node holds for others, and resuming
// from them after their owner died).
package server
