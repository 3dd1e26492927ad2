// Package reporter is the Go SDK for field apps and devices that send
// reports to xcollect (or any XMPP server with XEP-0198).
//
// A Reporter logs in over c2s (STARTTLS, SASL SCRAM-SHA-256 with
// SCRAM-SHA-1 fallback, resource binding), enables XEP-0198 stream
// management with resumption, and keeps the stream up: it follows
// <see-other-host/> redirects, reconnects with exponential backoff and
// jitter, and resumes the previous stream when the server still holds it
// (otherwise it binds anew).
//
// Delivery guarantee: Report returns nil only after the server's XEP-0198
// <a h/> covers the report. xcollect sends that ack only once the report
// is committed (fsync) to the component's durable queue (or delivered to
// an online local recipient), so a nil return means durable. Every report
// carries a random id, used as its stanza id and its XEP-0359
// <origin-id/>, that stays the same across retries; unacked reports wait
// in a bounded in-memory outbox and are re-sent after a reconnect (after a
// resume only those the server had not received). The server drops a
// repeat of (sender, origin-id) within the component's dedupe window, so
// a re-send never double-delivers. The outbox lives in memory: reports still
// in it when the process exits or Close is called are lost unless the
// caller kept them (Flush waits until the outbox is empty).
//
// Downstream stanzas (commands from processors) reach OnMessage and OnIQ
// handlers, called one at a time, in order, from one goroutine the
// Reporter owns; an IQ without a handler is answered with
// service-unavailable, XEP-0199 pings are answered internally.
//
// It must not import server, component, storage or cluster.
//
// Protocols: RFC 6120, RFC 6121 (presence), XEP-0198 (enable, resume, r, a),
// XEP-0199 (answering pings).
//
// Read first: Config, New, Reporter.Report, Reporter.Connect.
package reporter
