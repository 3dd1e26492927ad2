package component

import (
	"context"
	"time"

	"github.com/rs/zerolog"
)

// startGrace is how long delivery waits after the handshake for the
// component's first element. A component that enables XEP-0198 sends
// <enable/> first; waiting for it keeps the first rows from being
// delivered-on-write (and deleted) before acks were asked for.
const startGrace = 500 * time.Millisecond

// storeCallTimeout bounds one Claim, Ack or Release.
const storeCallTimeout = 30 * time.Second

// statsEvery is how often a connection of a component with several
// connections re-reads the partition count for its claim cap.
const statsEvery = time.Second

// rowOut is one claimed row on its way to the writer.
type rowOut struct {
	id int64
	b  []byte
}

// deliverLoop claims rows for the connection, hands them to the writer and
// deletes delivered ones. It waits on the queue's Subscribe channel for
// new rows, renews its leases by claiming at least every LeaseDuration/3,
// and keeps at most MaxInFlight rows unacknowledged. When the connection
// ends it acks what was delivered and releases its leases, so that
// another connection gets the rest (at-least-once).
func (c *conn) deliverLoop(writerDone <-chan struct{}) {
	q := c.m.store.Queue()
	cfg := c.m.cfg
	sub, unsub := q.Subscribe(c.jid)
	defer unsub()
	owner := c.owner()
	log := c.log.With().Str("owner", owner).Logger()

	select {
	case <-c.first:
	case <-time.After(startGrace):
	case <-c.done:
	}

	renewEvery := cfg.LeaseDuration / 3
	poll := min(renewEvery, 5*time.Second) // safety poll: lease takeover
	var (
		inFlight   int
		pending    []int64 // delivered rows not yet deleted
		lastClaim  time.Time
		want       = true
		limited    bool // the last claim was capped by MaxInFlight
		failing    bool
		capParts   int
		capChecked time.Time
	)
	timer := time.NewTimer(poll)
	defer timer.Stop()
	for {
		select {
		case <-c.done:
			c.finish(writerDone, pending, log)
			return
		default:
		}
		pending = append(pending, c.takeAcks()...)
		// New rows first: a Claim only reads, while the Ack of delivered
		// rows is a write that waits for the store's commit in progress
		// and its own fsync; doing it first put both on the path of every
		// new report to the processor.
		if want || time.Since(lastClaim) >= renewEvery {
			if time.Since(capChecked) >= statsEvery {
				capParts = c.partitionCap()
				capChecked = time.Now()
			}
			n := max(0, min(cfg.ClaimBatch, cfg.MaxInFlight-inFlight))
			ctx, cancel := context.WithTimeout(c.m.ctx, storeCallTimeout)
			items, err := q.Claim(ctx, c.jid, owner, cfg.LeaseDuration, capParts, n)
			cancel()
			lastClaim = time.Now()
			if err != nil {
				if !failing {
					log.Warn().Err(err).Msg("claim queue rows failed; retrying")
				}
				failing, want = true, false
			} else {
				if failing {
					log.Info().Msg("claiming queue rows works again")
				}
				failing = false
				limited = n < cfg.ClaimBatch
				if len(items) > 0 {
					inFlight += len(items)
					rows := make([]rowOut, len(items))
					for i := range items {
						rows[i] = rowOut{id: items[i].ID, b: items[i].Stanza}
					}
					if !c.sendRows(rows) {
						c.finish(writerDone, pending, log)
						return
					}
				}
				// A full batch means more rows may wait: claim again at once.
				want = n > 0 && len(items) == n
			}
		}
		if len(pending) > 0 {
			ctx, cancel := context.WithTimeout(c.m.ctx, storeCallTimeout)
			err := q.Ack(ctx, c.jid, pending)
			cancel()
			if err != nil {
				log.Warn().Err(err).Int("rows", len(pending)).Msg("ack delivered rows; retrying")
			} else {
				inFlight -= len(pending)
				pending = pending[:0]
				if limited {
					want = true
				}
			}
		}
		if want {
			continue
		}
		wait := poll
		if failing {
			wait = min(poll, time.Second)
		}
		if left := renewEvery - time.Since(lastClaim); left < wait {
			wait = max(left, time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-sub:
			want = true
		case <-c.ackWake:
		case <-timer.C:
			want = true
		case <-c.done:
		}
	}
}

// partitionCap is the claim cap on partitions when several connections of
// the component are online on this node: ceil(partitions/connections)+1,
// so that partitions spread while none stays unserved. With one
// connection there is no cap (0). Connections on other nodes are not
// counted; leases that a connection already holds are kept while their
// partition has rows, so the spread is reached as partitions drain.
func (c *conn) partitionCap() int {
	n := c.m.connections(c.jid)
	if n <= 1 {
		return 0
	}
	ctx, cancel := context.WithTimeout(c.m.ctx, storeCallTimeout)
	defer cancel()
	st, err := c.m.store.Queue().Stats(ctx, c.jid)
	if err != nil || len(st) == 0 {
		return 1
	}
	p := int(st[0].Partitions)
	return (p+n-1)/n + 1
}

// finish runs when the connection ended: once the writer is done, it
// deletes what was delivered and releases the leases so that unacked rows
// go to another connection.
func (c *conn) finish(writerDone <-chan struct{}, pending []int64, log zerolog.Logger) {
	<-writerDone
	q := c.m.store.Queue()
	pending = append(pending, c.takeAcks()...)
	ctx, cancel := context.WithTimeout(context.Background(), storeCallTimeout)
	defer cancel()
	if len(pending) > 0 {
		if err := q.Ack(ctx, c.jid, pending); err != nil {
			log.Warn().Err(err).Int("rows", len(pending)).Msg("ack delivered rows at disconnect; they will be delivered again")
		}
	}
	if err := q.Release(ctx, c.jid, c.owner()); err != nil {
		log.Warn().Err(err).Msg("release leases; they expire after the lease duration")
	}
	c.mu.Lock()
	unacked := len(c.unacked)
	c.mu.Unlock()
	log.Debug().Int("acked", len(pending)).Int("unacked", unacked).Msg("delivery stopped, leases released")
}
