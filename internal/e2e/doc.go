// Package e2e holds end-to-end tests that build the xcollect binary once
// (TestMain), run nodes as real processes on 127.0.0.1 with free ports and
// a YAML config in a temporary directory, and drive them with the raw
// clients of internal/xmpptest: reporters (c2s with XEP-0198) and a
// processor (XEP-0114 component with XEP-0198).
//
// The tests check the promise of README.md "Delivery guarantee, as built":
// a report whose <a h/> a client received is never lost, across SIGKILL of
// the node (embedded store) and an outage of Postgres.
//
// Read first: node (process, config, logs), reporter, processor.
package e2e
