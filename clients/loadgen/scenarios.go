package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"xcollect.dev/xcollect/internal/wire"
)

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

// iqReply answers an IQ request: a result to an XEP-0199 ping, else
// service-unavailable.
func iqReply(el *wire.Element) []byte {
	b := []byte("<iq")
	b = wire.AppendAttr(b, "id", el.Get("id"))
	b = wire.AppendAttr(b, "from", el.Get("to"))
	b = wire.AppendAttr(b, "to", el.Get("from"))
	if strings.Contains(string(el.Raw), "urn:xmpp:ping") {
		return append(b, " type='result'/>"...)
	}
	return append(b, " type='error'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"...)
}

// componentLoop reads the component stream until it ends.
func (r *reportRun) componentLoop(c *conn, early []*wire.Element) {
	defer close(r.compDone)
	var h uint32
	handle := func(el *wire.Element) error {
		if el.Name.Space == wire.NSSM {
			if el.Name.Local == "r" && r.compSM {
				return c.write(wire.Ack(h))
			}
			return nil
		}
		switch el.Name.Local {
		case "message", "presence", "iq":
			h++
		default:
			return nil
		}
		if el.Name.Local == "iq" && (el.Get("type") == "get" || el.Get("type") == "set") {
			// RFC 6120 §8.2.3: every request gets an answer. Without
			// XEP-0198 an xcollect node pings after each batch and deletes
			// the rows once the answer comes.
			return c.write(iqReply(el))
		}
		if el.Name.Local != "message" || el.Get("type") == "error" {
			return nil
		}
		now := time.Now().UnixNano()
		ci, seq, ns, ours := r.parseID(el.Get("id"))
		if !ours {
			r.stale.Add(1)
			return nil
		}
		if r.seen != nil {
			if _, dup := r.seen[ci][seq]; dup {
				r.dup.Add(1)
				return nil
			}
			r.seen[ci][seq] = struct{}{}
		}
		r.received.Add(1)
		if now <= r.winEnd.Load() {
			r.inWindow.Add(1)
		}
		if ns >= r.latFrom {
			r.latMu.Lock()
			if len(r.lat) < maxLatencies {
				r.lat = append(r.lat, (now-ns)/1000)
			}
			r.latMu.Unlock()
		}
		r.release(ci)
		return nil
	}
	for _, el := range early {
		if handle(el) != nil {
			return
		}
	}
	for {
		el, err := c.next()
		if err != nil {
			return
		}
		if handle(el) != nil {
			return
		}
	}
}

// clientLoop reads one client stream: acks, bounces, <r/>.
func (r *reportRun) clientLoop(ci int, c *conn, done chan<- struct{}) {
	defer close(done)
	var h uint32
	for {
		el, err := c.next()
		if err != nil {
			return
		}
		if el.Name.Space == wire.NSSM {
			switch el.Name.Local {
			case "a":
				if v, err := strconv.ParseUint(el.Get("h"), 10, 32); err == nil {
					r.ackedPer[ci].Store(int64(v))
					r.ackedReports(ci, int(v))
				}
			case "r":
				_ = c.write(wire.Ack(h)) // a failed write shows as a read error
			}
			continue
		}
		switch el.Name.Local {
		case "message", "presence", "iq":
			h++
		default:
			continue
		}
		if el.Name.Local == "message" && el.Get("type") == "error" {
			if _, _, _, ours := r.parseID(el.Get("id")); ours {
				r.bounced.Add(1)
				cond := errorCondition(el.Raw)
				v, _ := r.errTypes.LoadOrStore(cond, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
				r.release(ci)
			}
		}
	}
}

// errorCondition extracts the first stanza error condition from raw XML.
func errorCondition(raw []byte) string {
	s := string(raw)
	i := strings.Index(s, "urn:ietf:params:xml:ns:xmpp-stanzas")
	if i < 0 {
		return "unknown"
	}
	j := strings.LastIndexByte(s[:i], '<')
	if j < 0 {
		return "unknown"
	}
	name := s[j+1:]
	if k := strings.IndexAny(name, " />"); k >= 0 {
		name = name[:k]
	}
	return name
}

// setupClients logs the clients in, enables SM when asked and offered,
// and starts their read loops.
func (r *reportRun) setupClients() ([]*conn, []chan struct{}, error) {
	conns, failed, err := dialAll(r.o, r.o.n)
	if failed > 0 {
		closeAll(conns)
		return nil, nil, err
	}
	dones := make([]chan struct{}, len(conns))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var smErr error
	for i, c := range conns {
		if r.o.clientSM != "off" && c.smOffer {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, _, err := c.enableSM(stepTimeout, r.o.clientSM == "resume")
				if err != nil || !ok {
					mu.Lock()
					smErr = fmt.Errorf("client %d: enable stream management: ok=%v %v", i, ok, err)
					mu.Unlock()
				}
				r.smPer[i] = ok
			}()
		}
	}
	wg.Wait()
	if smErr != nil {
		closeAll(conns)
		return nil, nil, smErr
	}
	for i, c := range conns {
		dones[i] = make(chan struct{})
		go r.clientLoop(i, c, dones[i])
	}
	return conns, dones, nil
}

func closeAll(conns []*conn) {
	for _, c := range conns {
		if c != nil {
			c.close()
		}
	}
}

func (r *reportRun) startComponent() (*conn, error) {
	var c *conn
	var sm bool
	var early []*wire.Element
	var err error
	// The server may not have seen the previous run's component leave yet
	// (conflict): retry for a few seconds.
	for try := 0; try < 20; try++ {
		c, sm, early, err = dialComponentSM(r.o.compAddr, r.o.compJID, r.o.secret, r.o.compSM)
		if err == nil || !strings.Contains(err.Error(), "conflict") {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("component: %w", err)
	}
	r.compSM = sm
	r.compDone = make(chan struct{})
	go r.componentLoop(c, early)
	return c, nil
}

// stopComponent acknowledges everything (rows are deleted) and closes.
func (r *reportRun) stopComponent(c *conn) {
	c.close()
	select {
	case <-r.compDone:
	case <-time.After(5 * time.Second):
	}
}

// waitAcks asks every SM client for an ack and waits until each acked all
// it sent, bounded by d. It returns the acked total.
func (r *reportRun) waitAcks(conns []*conn, d time.Duration) int64 {
	anySM := false
	for i, c := range conns {
		if r.smPer[i] {
			anySM = true
			_ = c.write([]byte("<r xmlns='urn:xmpp:sm:3'/>")) // a dead stream shows as unacked
		}
	}
	if !anySM {
		return -1
	}
	deadline := time.Now().Add(d)
	for {
		var total int64
		all := true
		for i := range conns {
			a := r.ackedPer[i].Load()
			total += a
			if r.smPer[i] && a < r.sentPer[i].Load() {
				all = false
			}
		}
		if all || time.Now().After(deadline) {
			return total
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *reportRun) errCounts() map[string]int64 {
	m := map[string]int64{}
	r.errTypes.Range(func(k, v any) bool {
		m[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return m
}

func runReports(o options) (map[string]any, error) {
	r := newRun(o)
	comp, err := r.startComponent()
	if err != nil {
		return nil, err
	}
	defer r.stopComponent(comp)
	conns, dones, err := r.setupClients()
	if err != nil {
		return nil, err
	}
	defer closeAll(conns)
	r.tokens = make([]chan struct{}, o.n)
	for i := range r.tokens {
		r.tokens[i] = make(chan struct{}, o.window)
		for range o.window {
			r.tokens[i] <- struct{}{}
		}
	}
	cpu := startCPU(o.serverPIDs)
	start := time.Now()
	deadline := start.Add(o.duration)
	r.latFrom = start.Add(o.warmup).UnixNano()
	r.winEnd.Store(deadline.UnixNano())
	stop := time.NewTimer(o.duration)
	defer stop.Stop()
	stopped := make(chan struct{})
	go func() { <-stop.C; close(stopped) }()
	var wg sync.WaitGroup
	var writeErrs atomic.Int64
	var behind atomic.Int64 // rate mode: sends later than 10 ms after schedule
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var interval time.Duration
			var first time.Time
			if o.rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(o.n) / o.rate)
				first = start.Add(time.Duration(i) * interval / time.Duration(o.n))
			}
			for seq := 0; seq < 1<<31-1; seq++ {
				if o.rate > 0 {
					at := first.Add(time.Duration(seq) * interval)
					if !at.Before(deadline) {
						return
					}
					if d := time.Until(at); d > 0 {
						select {
						case <-time.After(d):
						case <-stopped:
							return
						}
					} else if d < -10*time.Millisecond {
						behind.Add(1)
					}
				}
				select {
				case <-r.tokens[i]:
				case <-stopped:
					return
				}
				if !time.Now().Before(deadline) {
					return
				}
				// A buffered client writes every report its window allows
				// at once (one write); at a steady rate each goes alone.
				k := 1
				for o.rate == 0 && o.burst && k < o.window && r.takeToken(i) {
					k++
				}
				var buf []byte
				for j := range k {
					r.sentReport(i, time.Now().UnixNano())
					buf = append(buf, r.report(i, seq+j)...)
				}
				seq += k - 1
				if err := c.write(buf); err != nil {
					writeErrs.Add(1)
					return
				}
				r.sent.Add(int64(k))
				r.sentPer[i].Add(int64(k))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	// Drain: wait for what is still in flight.
	drainEnd := time.Now().Add(o.drain)
	for r.received.Load()+r.bounced.Load() < r.sent.Load() && time.Now().Before(drainEnd) {
		time.Sleep(10 * time.Millisecond)
	}
	// CPU per report: from the start to the end of the drain (what the
	// reports cost), before the final acks.
	cpuRes := map[string]any{}
	cpu.record(cpuRes, r.received.Load())
	acked := r.waitAcks(conns, 3*time.Second)
	sent, recv, bounced := r.sent.Load(), r.received.Load(), r.bounced.Load()
	r.latMu.Lock()
	p50, p99 := percentiles(r.lat)
	nlat := len(r.lat)
	ackP50, ackP99 := percentiles(r.ackLat)
	nack := len(r.ackLat)
	r.latMu.Unlock()
	res := map[string]any{
		"clients": o.n, "window": o.window, "duration_s": round3(elapsed.Seconds()), "size": o.size,
		"sent": sent, "received": recv, "bounced": bounced, "lost": sent - recv - bounced,
		"reports_per_s": round3(float64(r.inWindow.Load()) / o.duration.Seconds()),
		"p50_ms":        p50, "p99_ms": p99, "latency_samples": nlat,
		"component_sm": r.compSM, "client_sm": r.smPer[0], "stale": r.stale.Load(),
		"write_errors": writeErrs.Load(), "starttls": o.startTLS,
		"errors_by_type": r.errCounts(),
	}
	maps.Copy(res, cpuRes)
	res["write_burst"] = o.burst && o.rate == 0
	if acked >= 0 {
		res["client_acked"] = acked
	}
	if nack > 0 {
		res["ack_p50_ms"], res["ack_p99_ms"], res["ack_samples"] = ackP50, ackP99, nack
	}
	if o.rate > 0 {
		res["rate"] = o.rate
		res["late_sends"] = behind.Load()
	}
	closeAll(conns)
	for _, d := range dones {
		<-d
	}
	conns = nil
	return res, nil
}

func runOffline(o options) (map[string]any, error) {
	r := newRun(o)
	r.seen = make([]map[int]struct{}, o.n)
	for i := range r.seen {
		r.seen[i] = map[int]struct{}{}
	}
	conns, dones, err := r.setupClients()
	if err != nil {
		return nil, err
	}
	defer func() {
		closeAll(conns)
		for _, d := range dones {
			<-d
		}
	}()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range o.perClient {
				if err := c.write(r.report(i, seq)); err != nil {
					return
				}
				r.sent.Add(1)
				r.sentPer[i].Add(1)
			}
		}()
	}
	wg.Wait()
	// Bounces and acks while the component is away.
	settleEnd := time.Now().Add(o.settle)
	for r.bounced.Load() < r.sent.Load() && time.Now().Before(settleEnd) {
		time.Sleep(20 * time.Millisecond)
	}
	acked := r.waitAcks(conns, o.settle)
	bouncedBefore := r.bounced.Load()
	comp, err := r.startComponent()
	if err != nil {
		return nil, err
	}
	// Receive until everything not bounced arrived, or 2 s of silence, or
	// the drain bound.
	drainEnd := time.Now().Add(o.drain)
	last, lastChange := int64(-1), time.Now()
	for time.Now().Before(drainEnd) {
		got := r.received.Load()
		if got+r.bounced.Load() >= r.sent.Load() {
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		} else if time.Since(lastChange) > 2*time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.stopComponent(comp)
	sent, recv, bounced := r.sent.Load(), r.received.Load(), r.bounced.Load()
	res := map[string]any{
		"clients": o.n, "per_client": o.perClient, "sent": sent,
		"bounced_while_absent": bouncedBefore, "bounced": bounced,
		"component_received": recv, "duplicates": r.dup.Load(), "stale": r.stale.Load(),
		"silently_lost": sent - recv - bounced, "not_delivered": sent - recv,
		"component_sm": r.compSM, "client_sm": r.smPer[0], "errors_by_type": r.errCounts(),
	}
	if acked >= 0 {
		res["client_acked"] = acked
	}
	return res, nil
}

func runLogin(o options) (map[string]any, error) {
	start := time.Now()
	deadline := start.Add(o.duration)
	lats := make([][]int64, o.n)
	errs := make([]int, o.n)
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range o.n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opts := c2sOpts(o, w)
			for i := 0; i < 10_000_000 && time.Now().Before(deadline); i++ {
				t0 := time.Now()
				c, err := dialC2S(opts)
				if err != nil {
					errs[w]++
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					time.Sleep(10 * time.Millisecond)
					continue
				}
				lats[w] = append(lats[w], time.Since(t0).Microseconds())
				c.close()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []int64
	nerr := 0
	for w := range o.n {
		all = append(all, lats[w]...)
		nerr += errs[w]
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("no login succeeded: %v", firstErr)
	}
	p50, p99 := percentiles(all)
	res := map[string]any{
		"workers": o.n, "starttls": o.startTLS, "mech": o.mech, "duration_s": round3(elapsed.Seconds()),
		"logins": len(all), "errors": nerr, "logins_per_s": round3(float64(len(all)) / elapsed.Seconds()),
		"p50_ms": p50, "p99_ms": p99,
	}
	if firstErr != nil {
		res["first_error"] = firstErr.Error()
	}
	return res, nil
}

func runIdle(o options) (map[string]any, error) {
	if o.serverPIDs == "" {
		return nil, errors.New("idle: -server-pid is required")
	}
	// Warm up: the first sessions of a fresh server also pay for pools,
	// caches and heap growth that later sessions reuse; measure after them.
	if o.idleWarmup > 0 {
		w, failed, err := dialAll(o, o.idleWarmup)
		closeAll(w)
		if failed > 0 {
			return nil, err
		}
		time.Sleep(o.settle)
	}
	before, err := vmRSS(o.serverPIDs)
	if err != nil {
		return nil, err
	}
	conns, failed, err := dialAll(o, o.n)
	defer closeAll(conns)
	if failed > 0 {
		return nil, err
	}
	time.Sleep(o.settle)
	after, err := vmRSS(o.serverPIDs)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"sessions": o.n, "warmup": o.idleWarmup, "starttls": o.startTLS, "rss_before_kib": before, "rss_after_kib": after,
		"kib_per_session": round3(float64(after-before) / float64(o.n)),
	}, nil
}
