// Package processor is the Go SDK for backend processors: programs that
// receive xcollect reports as an XEP-0114 external component.
//
// A Processor connects to a node's component listener, completes the
// XEP-0114 handshake, enables XEP-0198 stream management at once (before
// the node starts delivering, so that acks confirm its rows; XEP-0199
// pings, which the node sends otherwise, are answered by the SDK), follows
// <see-other-host/> redirects of a steering node, and calls
// the Handler for each incoming stanza, one at a time, in arrival order.
//
// Delivery guarantee (at-least-once): the XEP-0198 ack <a h/> covering a
// stanza is sent only after the Handler returned nil for it and for every
// stanza before it (acks are cumulative). xcollect deletes a queued row
// only when that ack arrives. When the Handler returns an error (or
// panics), the stanzas handled before it are acked, the connection is
// closed without acking the failed one, and after a backoff the Processor
// reconnects: the node delivers the failed stanza and everything after it
// again. A crash or a lost connection likewise redelivers whatever was not
// acked. So a Handler may see a report more than once and must be
// idempotent, e.g. keyed by (Report.From's bare JID, Report.ID).
//
// Reply helpers (Send, Message, IQ) write on the current connection:
// at-most-once, not re-sent after a reconnect.
//
// It must not import server, component, storage or cluster.
//
// Protocols: XEP-0114 (connect side), XEP-0198 (enable, r, a; no
// resumption: the node's queue redelivers instead).
//
// Read first: Config, Handler, Processor.Run.
package processor
