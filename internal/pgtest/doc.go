// Package pgtest runs throw-away PostgreSQL 15 servers for tests and for
// `make run-postgres`.
//
// Start(t) runs initdb in a temporary directory, starts the server on a free
// TCP port of 127.0.0.1 and registers a cleanup that stops it (fast shutdown
// by PID) and removes the directory. Stop and Start stop and restart the same
// server on the same data directory and port, so tests can take the database
// away under load. Main shares one server among all tests of a package;
// CreateDatabase gives each test its own fresh database on it.
//
// Fast mode (the default) runs with fsync, synchronous_commit and
// full_page_writes off; Options{Durable: true} keeps them on for durability
// tests and benchmarks.
//
// Postgres refuses to run as root: under uid 0 the server runs as the
// postgres system user (created with useradd if missing) and the directory
// is chowned to it. The server binaries are expected in BinDir; if they are
// missing the test fails with InstallHint. Nothing is skipped.
//
// It listens on 127.0.0.1 only; cluster tests whose nodes bind 127.0.0.2/3
// still connect to 127.0.0.1, which loopback routes like any 127.x address.
//
// Read first: Start, Server, Main.
package pgtest
