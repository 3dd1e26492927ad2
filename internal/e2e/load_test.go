package e2e

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmpptest"
)

// Load shape: modest, the box is shared.
const (
	batchSize     = 5                     // reports per <r/>
	batchEvery    = 25 * time.Millisecond // pace per reporter: at most 200 reports/s
	ackWait       = 2 * time.Second       // one WaitAck; then <r/> again
	dialEvery     = 100 * time.Millisecond
	dialFor       = 30 * time.Second // a reporter or processor gives up reconnecting
	finalAckWait  = 10 * time.Second // after stop: wait for what is in flight
	maxPerSession = 100_000          // h is a uint32; far below
)

// reporter is one field app: user<idx> with XEP-0198 sending reports with
// unique ids in batches, re-sending unacked ones on a new session after a
// disconnect. acked holds the ids whose <a h/> arrived (minus bounced
// ones).
type reporter struct {
	t    *testing.T
	idx  int
	addr string
	max  int // new report ids to send at most

	mu       sync.Mutex
	next     int             // next new id number
	resend   []string        // unacked ids of earlier sessions, in order
	acked    map[string]bool // ids acked (durable)
	sent     int             // stanzas written, resends included
	bounced  int             // error replies
	sessions int             // successful logins
	ackTimes int             // <a/> advances seen
	lastErr  error           // why the last session ended
}

func newReporter(t *testing.T, idx int, addr string, maxReports int) *reporter {
	return &reporter{t: t, idx: idx, addr: addr, max: maxReports, acked: map[string]bool{}}
}

// ackedCount returns how many ids are acked.
func (r *reporter) ackedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.acked)
}

// dial logs in, retrying while the node is down, until stop or dialFor.
func (r *reporter) dial(stop <-chan struct{}) *xmpptest.Conn {
	deadline := time.Now().Add(dialFor)
	user := fmt.Sprintf("user%d", r.idx)
	for time.Now().Before(deadline) {
		c, err := xmpptest.TryDialC2S(r.addr, domain, user, userPass, xmpptest.C2SOptions{Resource: "e2e"})
		if err == nil {
			if err = c.EnableSM(false); err == nil {
				r.mu.Lock()
				r.sessions++
				r.mu.Unlock()
				return c
			}
			c.Drop()
		}
		select {
		case <-stop:
			return nil
		case <-time.After(dialEvery):
		}
	}
	r.t.Errorf("reporter %d: no session within %v", r.idx, dialFor)
	return nil
}

// run sends until stop is closed (or max ids are sent and acked), then
// waits up to finalAckWait for what is in flight.
func (r *reporter) run(stop <-chan struct{}) {
	for {
		c := r.dial(stop)
		if c == nil {
			return
		}
		done := r.session(c, stop)
		c.Drop()
		if done {
			return
		}
	}
}

// session runs one connection; true when the reporter is finished.
func (r *reporter) session(c *xmpptest.Conn, stop <-chan struct{}) bool {
	var (
		inflight []string // ids sent in this session; h=i+1 acks inflight[i]
		ackedTo  int      // inflight[:ackedTo] acked
	)
	// requeue hands unacked ids of this session back for the next one.
	requeue := func(err error) {
		r.mu.Lock()
		r.resend = append(append([]string(nil), inflight[ackedTo:]...), r.resend...)
		r.lastErr = err
		r.mu.Unlock()
	}
	// update records acks and bounces; false when the stream ended.
	update := func() bool {
		h, _ := c.Acked()
		var bounced []string
		for {
			el, err := c.Next(0)
			if err != nil {
				break
			}
			if el.Name.Space == wire.NSClient && el.Get("type") == "error" {
				bounced = append(bounced, el.Get("id"))
			}
		}
		r.mu.Lock()
		if int(h) > ackedTo {
			r.ackTimes++
			for _, id := range inflight[ackedTo:h] {
				r.acked[id] = true
			}
			ackedTo = int(h)
		}
		for _, id := range bounced {
			if r.acked[id] {
				delete(r.acked, id)
			}
			r.bounced++
			r.resend = append(r.resend, id)
		}
		r.mu.Unlock()
		return c.Err(0) == nil
	}
	tick := time.NewTicker(batchEvery)
	defer tick.Stop()
	stopping := false
	for len(inflight) < maxPerSession {
		select {
		case <-stop:
			stopping = true
		default:
		}
		// Next batch: earlier unacked ids first, then new ones.
		var batch []string
		if !stopping {
			r.mu.Lock()
			n := min(batchSize, len(r.resend))
			batch = append(batch, r.resend[:n]...)
			r.resend = r.resend[n:]
			for len(batch) < batchSize && r.next < r.max {
				r.next++
				batch = append(batch, fmt.Sprintf("c%d-%d", r.idx, r.next))
			}
			r.mu.Unlock()
		}
		if len(batch) == 0 && ackedTo == len(inflight) {
			return true // stopped or all sent, nothing in flight
		}
		var b []byte
		for _, id := range batch {
			b = fmt.Appendf(b, "<message to='%s' id='%s' type='normal'><body>report %s</body></message>", compJID, id, id)
		}
		b = append(b, "<r xmlns='urn:xmpp:sm:3'/>"...)
		inflight = append(inflight, batch...)
		r.mu.Lock()
		r.sent += len(batch)
		r.mu.Unlock()
		if err := c.Send(string(b)); err != nil {
			update()
			requeue(err)
			return false
		}
		wait := ackWait
		if stopping {
			wait = finalAckWait
		}
		err := c.WaitAck(uint32(len(inflight)), wait)
		if !update() {
			requeue(c.Err(0))
			return false
		}
		if err != nil && stopping {
			requeue(err)
			return true
		}
		// Not acked in time (the store is slow or down): keep the session
		// and wait; the batch loop sends an <r/> with the next batch. While
		// unacked, send no new reports.
		for err != nil && ackedTo < len(inflight) {
			select {
			case <-stop:
				stopping = true
			default:
			}
			wait := ackWait
			if stopping {
				wait = finalAckWait
			}
			if serr := c.RequestAck(); serr != nil {
				update()
				requeue(serr)
				return false
			}
			err = c.WaitAck(uint32(len(inflight)), wait)
			if !update() {
				requeue(c.Err(0))
				return false
			}
			if err != nil && stopping {
				requeue(err)
				return true
			}
		}
		if !stopping {
			select {
			case <-tick.C:
			case <-stop:
			}
		}
	}
	requeue(nil)
	return false
}

// processor is the component: XEP-0198 on, acks all it receives (xmpptest
// answers <r/> with its received count), records the report ids.
type processor struct {
	t    *testing.T
	addr string

	mu       sync.Mutex
	got      map[string]int
	total    int
	sessions int
	lastErr  error
}

func newProcessor(t *testing.T, addr string) *processor {
	return &processor{t: t, addr: addr, got: map[string]int{}}
}

// run keeps a connection up until ctx ends.
func (p *processor) run(ctx context.Context) {
	for ctx.Err() == nil {
		c := p.dial(ctx)
		if c == nil {
			return
		}
		for ctx.Err() == nil {
			el, err := c.Next(100 * time.Millisecond)
			if err != nil {
				if cerr := c.Err(0); cerr != nil {
					p.mu.Lock()
					p.lastErr = cerr
					p.mu.Unlock()
					break
				}
				continue
			}
			if el.Name.Local == "message" && el.Get("type") != "error" {
				p.mu.Lock()
				p.got[el.Get("id")]++
				p.total++
				p.mu.Unlock()
			}
		}
		c.Drop()
	}
}

func (p *processor) dial(ctx context.Context) *xmpptest.Conn {
	deadline := time.Now().Add(dialFor)
	for time.Now().Before(deadline) {
		c, err := xmpptest.TryDialComponent(p.addr, compJID, compPass)
		if err == nil {
			if err = c.EnableSM(false); err == nil {
				p.mu.Lock()
				p.sessions++
				p.mu.Unlock()
				return c
			}
			c.Drop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(dialEvery):
		}
	}
	p.t.Errorf("processor: no connection within %v", dialFor)
	return nil
}

// received reports whether id arrived.
func (p *processor) received(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got[id] > 0
}

// load is a set of reporters and one processor.
type load struct {
	t         *testing.T
	reporters []*reporter
	proc      *processor
	stop      chan struct{}
	wg        sync.WaitGroup
	procStop  context.CancelFunc
	procDone  chan struct{}
}

// startLoad starts the processor and count reporters against n.
func startLoad(t *testing.T, n *node, count, maxReports int) *load {
	l := &load{t: t, proc: newProcessor(t, n.comp), stop: make(chan struct{}), procDone: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	l.procStop = cancel
	go func() { defer close(l.procDone); l.proc.run(ctx) }()
	for i := 1; i <= count; i++ {
		r := newReporter(t, i, n.c2s, maxReports)
		l.reporters = append(l.reporters, r)
		l.wg.Add(1)
		go func() { defer l.wg.Done(); r.run(l.stop) }()
	}
	t.Cleanup(func() {
		l.stopReporters(finalAckWait + 5*time.Second)
		l.stopProcessor()
	})
	return l
}

// acked is the count of acked ids over all reporters.
func (l *load) acked() int {
	n := 0
	for _, r := range l.reporters {
		n += r.ackedCount()
	}
	return n
}

// stopReporters asks the reporters to stop and waits (bounded) for them.
func (l *load) stopReporters(timeout time.Duration) {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		l.t.Errorf("reporters did not stop within %v", timeout)
	}
}

func (l *load) stopProcessor() {
	l.procStop()
	select {
	case <-l.procDone:
	case <-time.After(5 * time.Second):
		l.t.Errorf("processor did not stop within 5s")
	}
}

// lost returns the acked ids the processor has not received, sorted.
func (l *load) lost() []string {
	var out []string
	for _, r := range l.reporters {
		r.mu.Lock()
		for id := range r.acked {
			if !l.proc.received(id) {
				out = append(out, id)
			}
		}
		r.mu.Unlock()
	}
	sort.Strings(out)
	return out
}

// totals are the numbers a test logs.
type totals struct {
	ids, sent, acked, bounced, unacked, sessions int
	received, duplicates, procSessions           int
}

func (l *load) totals() totals {
	var s totals
	for _, r := range l.reporters {
		r.mu.Lock()
		s.ids += r.next
		s.sent += r.sent
		s.acked += len(r.acked)
		s.bounced += r.bounced
		s.sessions += r.sessions
		r.mu.Unlock()
	}
	s.unacked = s.ids - s.acked
	l.proc.mu.Lock()
	s.received = len(l.proc.got)
	s.duplicates = l.proc.total - len(l.proc.got)
	s.procSessions = l.proc.sessions
	l.proc.mu.Unlock()
	return s
}

func (s totals) String() string {
	return fmt.Sprintf("report ids=%d sent=%d (resends included) acked=%d unacked=%d bounced=%d client-sessions=%d | processor received=%d distinct, duplicates=%d, sessions=%d",
		s.ids, s.sent, s.acked, s.unacked, s.bounced, s.sessions, s.received, s.duplicates, s.procSessions)
}

// drain waits up to timeout until every acked id reached the processor,
// and returns the acked-but-lost ids.
func (l *load) drain(timeout time.Duration) []string {
	var lost []string
	testutil.Poll(timeout, func() bool {
		lost = l.lost()
		return len(lost) == 0
	})
	return lost
}
