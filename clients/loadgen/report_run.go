package main

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The shared state of the reports and offline scenarios: report ids,
// send and ack bookkeeping, latency samples.

// maxLatencies bounds the latency samples kept in memory.
const maxLatencies = 20_000_000

// reportRun is the shared state of the reports and offline scenarios.
// Report ids are lg.<run>.<client>.<seq>.<send unix ns>, so the component
// side finds the client (to refill its window) and the latency without a
// lookup table, and ignores rows left over from earlier runs.
type reportRun struct {
	o       options
	runID   string
	pad     string
	tokens  []chan struct{} // per client: free window slots
	latFrom int64           // unix ns: latencies of reports sent before are not kept
	winEnd  atomic.Int64    // unix ns: receipts after it are outside the window

	sent, bounced atomic.Int64
	sentPer       []atomic.Int64
	ackedPer      []atomic.Int64 // last <a h/> per client (with SM)
	ackTrack      []ackTrack     // per client: send times, for ack latency
	smPer         []bool
	errTypes      sync.Map // condition → *atomic.Int64

	received, inWindow, stale, dup atomic.Int64
	latMu                          sync.Mutex
	lat                            []int64 // µs, send → component receipt
	ackLat                         []int64 // µs, send → the client's <a h/> covering it (SM)
	compDone                       chan struct{}
	compSM                         bool
	seen                           []map[int]struct{} // per client seqs (offline only)
}

func newRun(o options) *reportRun {
	r := &reportRun{o: o, runID: newRunID(),
		sentPer: make([]atomic.Int64, o.n), ackedPer: make([]atomic.Int64, o.n), smPer: make([]bool, o.n),
		ackTrack: make([]ackTrack, o.n)}
	// <message to='' id='lg.xxxxxxxx.0.0.1700000000000000000' type='normal'><data xmlns='urn:xcollect:loadgen'></data></message>
	// (110 bytes with an 8-character run id)
	fixed := 110 + len(o.compJID) + len(r.runID) - 8
	r.pad = strings.Repeat("x", max(0, o.size-fixed))
	r.winEnd.Store(1<<63 - 1)
	return r
}

// newRunID returns the run's part of the report ids: the start time in
// nanoseconds (base 36) and 4 random bytes, so that ids never repeat across
// runs against the same server (bench runs repeat on one store, and a
// store that dedupes must not see an old id again).
func newRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatInt(time.Now().UnixNano(), 36) + hex.EncodeToString(b[:])
}

// ackTrack remembers when a client sent each report (its XEP-0198 count:
// reports are the only stanzas it sends after <enable/>), so that an
// <a h/> gives the latency of the reports it covers.
type ackTrack struct {
	mu     sync.Mutex
	sentAt []int64 // unix ns of report k+1
	acked  int
}

func (r *reportRun) sentReport(ci int, ns int64) {
	if !r.smPer[ci] {
		return
	}
	t := &r.ackTrack[ci]
	t.mu.Lock()
	if len(t.sentAt) < maxLatencies {
		t.sentAt = append(t.sentAt, ns)
	}
	t.mu.Unlock()
}

func (r *reportRun) ackedReports(ci int, h int) {
	now := time.Now().UnixNano()
	t := &r.ackTrack[ci]
	var lat []int64
	t.mu.Lock()
	for ; t.acked < h && t.acked < len(t.sentAt); t.acked++ {
		if ns := t.sentAt[t.acked]; ns >= r.latFrom {
			lat = append(lat, (now-ns)/1000)
		}
	}
	t.mu.Unlock()
	if len(lat) > 0 {
		r.latMu.Lock()
		if len(r.ackLat) < maxLatencies {
			r.ackLat = append(r.ackLat, lat...)
		}
		r.latMu.Unlock()
	}
}

func (r *reportRun) report(ci, seq int) []byte {
	b := make([]byte, 0, r.o.size+64)
	b = append(b, "<message to='"...)
	b = append(b, r.o.compJID...)
	b = append(b, "' id='lg."...)
	b = append(b, r.runID...)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(ci), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, "' type='normal'><data xmlns='urn:xcollect:loadgen'>"...)
	b = append(b, r.pad...)
	b = append(b, "</data></message>"...)
	if r.smPer[ci] && (seq+1)%r.o.rEvery == 0 {
		b = append(b, "<r xmlns='urn:xmpp:sm:3'/>"...)
	}
	return b
}

// parseID returns client, seq and send time of one of this run's ids.
func (r *reportRun) parseID(id string) (ci, seq int, ns int64, ours bool) {
	rest, ok := strings.CutPrefix(id, "lg.")
	if !ok {
		return 0, 0, 0, false
	}
	run, rest, _ := strings.Cut(rest, ".")
	if run != r.runID {
		return 0, 0, 0, false
	}
	a, rest, _ := strings.Cut(rest, ".")
	s, t, _ := strings.Cut(rest, ".")
	ci, err1 := strconv.Atoi(a)
	seq, err2 := strconv.Atoi(s)
	ns, err3 := strconv.ParseInt(t, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || ci < 0 || ci >= r.o.n {
		return 0, 0, 0, false
	}
	return ci, seq, ns, true
}

// takeToken takes a free window slot of client ci if there is one.
func (r *reportRun) takeToken(ci int) bool {
	select {
	case <-r.tokens[ci]:
		return true
	default:
		return false
	}
}

func (r *reportRun) release(ci int) {
	if r.tokens == nil {
		return
	}
	select {
	case r.tokens[ci] <- struct{}{}:
	default:
	}
}
