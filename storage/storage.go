// Package storage defines the persistence interfaces of xcollect: accounts
// and SCRAM credentials, rosters, offline messages and the per-component
// store-and-forward queue with its dead letters.
//
// Two implementations satisfy them: storage/embedded (bbolt, a single node)
// and storage/postgres (pgx/v5, shared by every node of a cluster). Both must
// pass the contract suite in storage/storetest. Nothing here imports a driver
// type; callers see only the types of this package.
//
// Keys are strings: a bare JID ("alice@example.com") names an account, a
// roster owner or an offline recipient; a component JID ("collector.example.com")
// names a queue. Callers pass JIDs already normalised by mellium.im/xmpp/jid.
//
// Read first: Store, QueueStore, QueueItem.
package storage

import (
	"context"
	"time"
)

// Store is the whole persistent state of a node. Implementations are safe for
// concurrent use.
type Store interface {
	Users() UserStore
	Rosters() RosterStore
	Offline() OfflineStore
	Queue() QueueStore
	// Ping reports whether the backing store is reachable right now.
	Ping(ctx context.Context) error
	// Close releases the store. Calls after Close fail.
	Close() error
}

// ScramKeys is the salted form of a password for one SCRAM hash.
// SaltedPassword is Hi(password, salt, iterations) of RFC 5802.
type ScramKeys struct {
	Salt           []byte
	Iterations     int
	SaltedPassword []byte
}

// Credentials is all a store keeps of a password: never the password itself.
type Credentials struct {
	SHA1   ScramKeys
	SHA256 ScramKeys
}

// UserStore holds accounts. user is a bare JID.
type UserStore interface {
	// CreateUser adds an account; ErrExists if it is already there.
	CreateUser(ctx context.Context, user string, cred Credentials) error
	// SetCredentials replaces the credentials; ErrNotFound if no such user.
	SetCredentials(ctx context.Context, user string, cred Credentials) error
	// GetCredentials returns the credentials; ErrNotFound if no such user.
	GetCredentials(ctx context.Context, user string) (Credentials, error)
	// DeleteUser removes the account with its roster and offline messages;
	// ErrNotFound if no such user.
	DeleteUser(ctx context.Context, user string) error
	// ListUsers returns the bare JIDs of domain's accounts, sorted.
	ListUsers(ctx context.Context, domain string) ([]string, error)
}

// Subscription states of RFC 6121 §2.1.2.5.
const (
	SubNone = "none"
	SubTo   = "to"
	SubFrom = "from"
	SubBoth = "both"
)

// RosterItem is one contact in a user's roster (RFC 6121 §2.1).
type RosterItem struct {
	JID          string // contact bare JID
	Name         string
	Subscription string // SubNone, SubTo, SubFrom or SubBoth
	// Ask is true while an outbound subscription request is pending
	// (ask='subscribe').
	Ask bool
	// PendingIn is true while an inbound request waits for the owner's
	// answer; the server redelivers the request at each login until then.
	PendingIn bool
	Groups    []string
}

// RosterStore holds rosters. owner is a bare JID.
type RosterStore interface {
	// GetRoster returns owner's items sorted by JID.
	GetRoster(ctx context.Context, owner string) ([]RosterItem, error)
	// GetRosterItem returns one item; ok is false when it is absent.
	GetRosterItem(ctx context.Context, owner, contact string) (item RosterItem, ok bool, err error)
	// PutRosterItem adds or replaces item.JID in owner's roster.
	PutRosterItem(ctx context.Context, owner string, item RosterItem) error
	// DeleteRosterItem removes contact; no error if absent.
	DeleteRosterItem(ctx context.Context, owner, contact string) error
}

// OfflineMessage is a stanza kept for a user with no available resource.
type OfflineMessage struct {
	ID     int64 // increasing per store
	To     string
	Stanza []byte // the stanza as it would have been written, from/to stamped
	Stored time.Time
}

// OfflineStore keeps messages for offline users.
type OfflineStore interface {
	// StoreOffline durably keeps stanza for the bare JID to. If to already
	// has limit or more messages it returns ErrLimit and stores nothing.
	// limit <= 0 means no limit.
	StoreOffline(ctx context.Context, to string, stanza []byte, limit int) error
	// FetchOffline returns to's messages stored at or after notBefore, oldest
	// first. It does not remove them.
	FetchOffline(ctx context.Context, to string, notBefore time.Time) ([]OfflineMessage, error)
	// DeleteOffline removes to's messages with ID <= upTo.
	DeleteOffline(ctx context.Context, to string, upTo int64) error
	// ExpireOffline removes every message stored before t and returns how many.
	ExpireOffline(ctx context.Context, before time.Time) (int, error)
}

// QueueItem is one stanza waiting for a component.
type QueueItem struct {
	ID        int64  // assigned by Enqueue, increasing per store
	Component string // component JID (domain) the stanza is for
	Sender    string // sender's bare JID: the ordering partition
	From      string // sender's full JID as stamped on the stanza
	StanzaID  string // the stanza's id attribute, kept for operators; never a dedupe key
	// OriginID is the id the sender asserts unique for the report (XEP-0359
	// <origin-id/>, stable across its retries): the dedupe key together with
	// Sender; "" = never deduplicated. Enqueue reads it; it is not kept
	// with the row (Claim and List leave it empty).
	OriginID string
	Stanza   []byte    // the stanza bytes, intact
	Enqueued time.Time // set by Enqueue
	// Attempts counts how many times the item was handed to a connection.
	Attempts int
	// Reason is set on dead letters: why the item left the queue.
	Reason string
}

// QueueLimits bound one component's queue. Zero fields mean no limit.
type QueueLimits struct {
	MaxRows      int64
	MaxBytes     int64
	DedupeWindow time.Duration
}

// EnqueueResult says what Enqueue did with one item.
type EnqueueResult int

const (
	// Queued: the item is durable in the queue.
	Queued EnqueueResult = iota
	// Duplicate: (Sender, OriginID) was queued within the dedupe window; the
	// item was not queued again but the sender may be acknowledged.
	Duplicate
	// Full: a limit of the component's queue was reached; nothing was stored.
	Full
)

func (r EnqueueResult) String() string {
	switch r {
	case Queued:
		return "queued"
	case Duplicate:
		return "duplicate"
	case Full:
		return "full"
	}
	return "unknown"
}

// QueueStats describes one component's queue.
type QueueStats struct {
	Component   string
	Rows        int64
	Bytes       int64
	Partitions  int64 // distinct senders with rows
	Leased      int64 // partitions under a live lease
	Oldest      time.Time
	DeadLetters int64
}

// QueueStore is the durable store-and-forward queue of the components.
//
// Rows of one component are partitioned by Sender. A delivery connection
// (owner) leases partitions: while its lease lives, only it is handed rows
// of that partition, in ID order, so each sender's order is kept even with
// several connections on several nodes. A lease that is not renewed expires
// and the partition may be taken by another owner, which then gets the rows
// the old owner had claimed but not acked (at-least-once).
type QueueStore interface {
	// Enqueue commits items in one transaction (group commit, fsync) and
	// returns one result per item. limits gives each component's limits.
	// When it returns nil error, every Queued item is durable.
	Enqueue(ctx context.Context, items []QueueItem, limits func(component string) QueueLimits) ([]EnqueueResult, error)
	// Claim leases partitions of component for owner (free ones and expired
	// ones, keeping owner's own) until owner holds maxPartitions in all (no
	// cap when maxPartitions <= 0), extends owner's leases to now+lease, and
	// returns up to max rows of owner's partitions
	// that were not yet claimed by owner, in ID order. Rows claimed from a
	// partition taken over from another owner are returned again.
	// Owner's leases on partitions that have no rows left are released.
	Claim(ctx context.Context, component, owner string, lease time.Duration, maxPartitions, max int) ([]QueueItem, error)
	// Ack deletes rows that were delivered and acknowledged.
	Ack(ctx context.Context, component string, ids []int64) error
	// Release drops owner's leases and claims on component so that its
	// unacked rows are handed out again.
	Release(ctx context.Context, component, owner string) error
	// ReleasePrefix is Release for every owner whose name starts with
	// prefix: a node that restarts under the same name releases what its
	// previous run held ("node1/") instead of waiting for the leases to
	// expire.
	ReleasePrefix(ctx context.Context, component, prefix string) error
	// Stats returns component's queue statistics; all components when
	// component is "".
	Stats(ctx context.Context, component string) ([]QueueStats, error)
	// List returns up to limit rows of component in ID order (dead letters
	// when dead is true).
	List(ctx context.Context, component string, dead bool, limit int) ([]QueueItem, error)
	// Expire moves rows of component enqueued before t to the dead letters
	// with reason "expired" and returns how many.
	Expire(ctx context.Context, component string, before time.Time) (int, error)
	// Replay moves dead letters of component back to the queue (all when ids
	// is empty) and returns how many.
	Replay(ctx context.Context, component string, ids []int64) (int, error)
	// Drop deletes dead letters of component (all when ids is empty) and
	// returns how many.
	Drop(ctx context.Context, component string, ids []int64) (int, error)
	// Subscribe returns a channel that receives a value (coalesced) after
	// rows for component were committed by any node sharing this store.
	// cancel stops the subscription.
	Subscribe(component string) (ch <-chan struct{}, cancel func())
}
