// Package xmppc is the one client side of an XMPP stream in the module,
// used by the reporter and processor SDKs, the load generator
// (clients/loadgen) and the test client (internal/xmpptest): dialing,
// STARTTLS, SASL (SCRAM-SHA-256 preferred, SCRAM-SHA-1 fallback, or one
// named mechanism including PLAIN, via mellium.im/sasl), resource binding,
// the XEP-0114 component handshake, stream and stanza error values, and a
// jittered exponential backoff.
//
// Negotiation here is synchronous: one goroutine drives a Conn from the TCP
// connect to a bound resource or accepted component, every step bounded by
// a deadline derived from the context (ctx cancellation closes the
// connection's deadlines at once). After negotiation the owner of the Conn
// runs one read loop over Conn.Dec and one writer; xmppc starts no
// goroutine of its own except the context watcher of a negotiation, which
// ends when the negotiation does.
//
// It must not import server, component, storage or cluster: it speaks to
// them only over the wire (internal/wire encodes and decodes). It lives in
// the module's top-level internal/ so that both clients/ and the module's
// tests may import it while users of the SDKs cannot; test-only helpers
// built on it stay in internal/xmpptest, never here.
//
// Protocols: RFC 6120 (STARTTLS, SASL, bind, stream errors), XEP-0114
// (connect side), XEP-0198 helpers.
//
// Read first: OpenC2S, OpenComponent, Conn, StreamError.
package xmppc
