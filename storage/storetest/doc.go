// Package storetest is the contract test suite of storage.Store. Every
// implementation (storage/embedded, storage/postgres) runs it from its own
// tests:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, storetest.Factory{Open: open, Reopen: reopen})
//	}
//
// It owns the executable meaning of the storage interfaces where their
// comments leave room. The choices it pins down, which every store must make
// the same way:
//
//   - Claim's maxPartitions caps the number of partitions owner holds after
//     the call (its kept leases plus new ones); maxPartitions <= 0 means no
//     cap. Rows come back sorted by ID across owner's partitions.
//   - Dedupe keys on (Sender, OriginID) only: a repeated StanzaID without an
//     OriginID is a new report. A dedupe entry outlives its row: a repeat of
//     (Sender, OriginID) inside the window is a Duplicate even after the
//     first copy was acked. An item that was Full leaves no dedupe entry.
//     Repeats inside one Enqueue call are Duplicates too. An empty OriginID
//     is never deduplicated.
//   - QueueStats.Bytes and QueueLimits.MaxBytes count len(Stanza).
//   - Replay gives rows new, increasing IDs in the order of their old IDs, so
//     each sender's order is kept; Reason is cleared. Dead letters keep the
//     Attempts they had.
//   - Stats(component) returns exactly one entry, zero when the component is
//     unknown; Stats("") returns at least every component with rows or dead
//     letters, sorted by Component.
//   - After Close every call fails with an error matching storage.ErrClosed.
//
// The suite does not sleep to synchronise: it polls with deadlines. Clocks are
// only compared with tolerance, so a store may stamp times with its server's
// clock (Postgres now()) and microsecond precision.
//
// Read first: Run, Factory.
package storetest
