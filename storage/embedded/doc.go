// Package embedded is the single-node storage.Store of xcollect, kept in one
// bbolt file (go.etcd.io/bbolt): no server to run, durable across restarts
// (every commit is fsynced). `xcollect serve` uses it when no database is
// configured. It must not be shared by several nodes: a cluster uses
// storage/postgres.
//
// It owns the on-disk layout below and the in-process fan-out of Subscribe.
// Every QueueStore call is one bbolt transaction; Enqueue of many items is
// one commit (group commit), and write transactions that arrive while a
// commit runs share the next one (group.go).
//
//	users     user → credentials (JSON)
//	domains   domain \x00 user → nil             (ListUsers by domain)
//	rosters   owner \x00 contact → item (JSON)
//	offline   to \x00 id → stored, stanza        (sequence = offline IDs)
//	offtime   stored, id → to                    (ExpireOffline by time)
//	offcount  to → count                         (O(1) per-user limit)
//	queue     sequence = queue IDs; one nested bucket per component:
//	  rows    id → row                           (ID order = FIFO)
//	  parts   sender \x00 id → attempts          (partition index: Claim seeks)
//	  leases  (empty; from older versions, cleared at open)
//	  dedupe  sender \x00 origin id → time; dedupet time, sender \x00 id → nil
//	  dead    id → row with attempts and reason
//	  meta    rows, bytes, dead counters         (O(1) limit checks)
//
// Integers in keys are big-endian so that byte order is numeric order.
// Partition leases live in memory (leases.go): the file lock makes this
// process the only user and leases mean nothing after a restart, so a Claim
// is a read transaction and writes nothing (no fsync); attempts counted in
// this run are written with a row when it leaves for the dead letters.
// A lease's claimed-up-to id replaces per-row claim marks: within one lease
// rows are claimed in ID order per partition, so the claimed rows are exactly
// the partition's rows up to that id. Release deletes the lease; a takeover
// starts a new one at zero, so the new owner gets the unacked rows again.
//
// Read first: Open, Store.
package embedded
