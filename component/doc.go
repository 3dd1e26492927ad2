// Package component owns the component side of a node: the XEP-0114
// (jabber:component:accept) listener, the durable store-and-forward queue
// writer of every configured component, and the delivery of queued rows to
// connected components.
//
// Upstream, Manager implements server.Queuer: the router hands it every
// stanza addressed to a component with Submit; one committer goroutine
// group-commits whatever is waiting with storage.QueueStore.Enqueue (no
// timer: batches grow under load) and then calls each item's done callback.
// While the store fails, the committer keeps the batch and retries with
// backoff; it never reports success for what is not durable, and beyond
// Config.Backlog waiting items new submits fail at once with ErrBacklogFull.
//
// Downstream, each accepted component connection runs a read loop (stanzas
// go to Router.RouteFromComponent after their 'from' is checked against the
// component's domain), one writer goroutine, and a delivery loop that
// leases per-sender partitions with QueueStore.Claim, writes the rows'
// stanza bytes verbatim, and deletes them with QueueStore.Ack once the
// component confirmed them: with XEP-0198 <a h/> if it enabled stream
// management, otherwise by answering the XEP-0199 ping written after each
// batch (any answer, result or error, confirms every row before it). A
// ping or <r/> left unanswered for PingTimeout closes the stream. On
// disconnect the connection's leases are released so that another
// connection gets the unacknowledged rows (at-least-once, FIFO per sender).
//
// It must not import server (the Router interface keeps the dependency one
// way) and does not parse stanza payloads.
//
// Protocols: XEP-0114 (accept side only), XEP-0198 (enable, r, a; no
// resumption: a reconnecting component gets its unacked rows again).
//
// Read first: Manager, Config, conn (accept.go, conn.go, deliver.go).
package component
