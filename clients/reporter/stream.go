package reporter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmppc"
)

// stream is one live connection: the supervisor goroutine reads it, its
// writer goroutine writes it.
type stream struct {
	c          *xmppc.Conn
	stop       chan struct{} // closed when the writer must quit
	writerDone chan struct{}
	readDone   chan struct{} // closed when the read loop ended
}

// before reports a < b in 2^32 serial arithmetic (XEP-0198 counters wrap).
func before(a, b uint32) bool { return int32(a-b) < 0 }

const smNS = "xmlns='urn:xmpp:sm:3'"

// connect makes one connection attempt, following see-other-host.
func (r *Reporter) connect(ctx context.Context) (*stream, error) {
	r.mu.Lock()
	addr := r.addr
	r.mu.Unlock()
	if addr == "" {
		addr = r.cfg.Addr
	}
	for hops := 0; ; hops++ {
		s, err := r.connectTo(ctx, addr)
		var se *StreamError
		if errors.As(err, &se) && se.Condition == wire.SeeOtherHost && se.Content != "" {
			if hops >= r.cfg.MaxRedirects {
				return nil, fmt.Errorf("reporter: more than %d see-other-host redirects (last to %s): %w", r.cfg.MaxRedirects, se.Content, err)
			}
			next := xmppc.RedirectAddr(se.Content, r.cfg.Addr)
			r.log.Info().Str("from", addr).Str("to", next).Msg("see-other-host: following the redirect")
			addr = next
			continue
		}
		r.mu.Lock()
		if err != nil {
			r.addr = "" // the next attempt starts from the configured node again
		} else {
			r.addr = addr
		}
		r.mu.Unlock()
		return s, err
	}
}

// connectTo negotiates a stream at addr up to a bound (or resumed) session
// with stream management, and sets the SM state for it.
func (r *Reporter) connectTo(ctx context.Context, addr string) (*stream, error) {
	nc, err := r.cfg.Dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("reporter: connect to %s: %w", addr, err)
	}
	c, feats, err := xmppc.OpenC2S(ctx, nc, xmppc.C2SConfig{
		Domain: r.domain, Username: r.local, Password: r.cfg.Password,
		TLS: r.cfg.TLS, InsecureSkipVerify: r.cfg.InsecureSkipVerify,
		AllowPlaintext: r.cfg.AllowPlaintext, Timeout: r.cfg.Timeout,
	})
	if err != nil {
		return nil, fmt.Errorf("reporter: %s: %w", addr, err)
	}
	fail := func(err error) (*stream, error) {
		c.Close()
		return nil, fmt.Errorf("reporter: %s: %w", addr, err)
	}
	if !strings.Contains(string(feats.Raw), wire.NSSM) {
		return fail(ErrNoStreamManagement)
	}
	s := &stream{c: c, stop: make(chan struct{}), writerDone: make(chan struct{}), readDone: make(chan struct{})}
	resumed, err := r.tryResume(ctx, c)
	if err != nil {
		return fail(err)
	}
	if resumed {
		return s, nil
	}
	r.mu.Lock()
	res := r.resource
	r.mu.Unlock()
	full, err := c.Bind(ctx, res)
	if err != nil {
		return fail(err)
	}
	el, err := c.Step(ctx, []byte("<enable "+smNS+" resume='true'/>"))
	for err == nil && el.Name.Space == wire.NSClient {
		// A stanza before <enabled/> is not counted (XEP-0198 §4).
		r.handleStanza(el)
		el, err = c.Step(ctx, nil)
	}
	if err != nil {
		return fail(err)
	}
	if el.Name.Space != wire.NSSM || el.Name.Local != "enabled" {
		return fail(fmt.Errorf("enable stream management: %s", el.Raw))
	}
	maxSec, _ := strconv.Atoi(el.Get("max")) // absent: 0, no server limit given
	resumable := el.Get("resume") == "true" || el.Get("resume") == "1"
	r.mu.Lock()
	r.fullJID = full
	if i := strings.IndexByte(full, '/'); i >= 0 {
		r.resource = full[i+1:]
	}
	r.smID = ""
	if resumable {
		r.smID = el.Get("id")
	}
	r.smMax = time.Duration(maxSec) * time.Second
	r.outSent, r.inRecv = 0, 0
	r.inflight, r.sentN = nil, 0
	r.syncing, r.rPending = false, false
	r.extra = nil
	if r.presence != nil {
		r.extra = append(r.extra, outb{b: r.presence, stanza: true})
	}
	pending := len(r.outbox)
	r.mu.Unlock()
	r.log.Info().Str("addr", addr).Str("full_jid", full).Bool("resumable", resumable).Int("resending", pending).Msg("session bound")
	return s, nil
}

// tryResume sends <resume/> when the last stream may still be resumable.
// On <resumed/> the reports the server already has are completed and the
// rest wait for the <a/> that answers the <r/> queued here (see syncing).
func (r *Reporter) tryResume(ctx context.Context, c *xmppc.Conn) (bool, error) {
	r.mu.Lock()
	window := r.smMax
	if r.cfg.ResumeTimeout < 0 {
		window = 0
	} else if r.cfg.ResumeTimeout > 0 && (window == 0 || r.cfg.ResumeTimeout < window) {
		window = r.cfg.ResumeTimeout
	}
	previd, h := r.smID, r.inRecv
	ok := previd != "" && window > 0 && time.Since(r.lostAt) < window
	r.mu.Unlock()
	if !ok {
		return false, nil
	}
	b := []byte("<resume " + smNS)
	b = wire.AppendAttr(b, "previd", previd)
	b = append(b, " h='"+strconv.FormatUint(uint64(h), 10)+"'/>"...)
	el, err := c.Step(ctx, b)
	if err != nil {
		return false, err
	}
	if el.Name.Space != wire.NSSM || el.Name.Local != "resumed" {
		r.log.Info().Str("answer", string(el.Raw)).Msg("stream not resumable; binding a new session")
		r.mu.Lock()
		r.smID = ""
		r.mu.Unlock()
		return false, nil
	}
	sh, err := strconv.ParseUint(el.Get("h"), 10, 32)
	if err != nil {
		return false, fmt.Errorf("resumed: invalid h in %s", el.Raw)
	}
	r.mu.Lock()
	if err := r.ackLocked(uint32(sh)); err != nil {
		r.mu.Unlock()
		return false, err
	}
	// The server's h counts what is durable; stanzas it received but has
	// not committed yet are counted later. Ask where it stands before
	// re-sending anything, so both counts stay equal.
	r.syncing = true
	r.rPending, r.rSentAt = true, time.Now()
	r.extra = []outb{{b: []byte("<r " + smNS + "/>")}}
	n := len(r.outbox)
	r.mu.Unlock()
	r.log.Info().Uint64("h", sh).Int("unacked", n).Msg("stream resumed")
	return true, nil
}

// supervise owns the connection from the first stream to Close: it serves
// each stream and reconnects with backoff when one ends.
func (r *Reporter) supervise(s *stream) {
	defer r.wg.Done()
	bo := xmppc.Backoff{Min: r.cfg.MinBackoff, Max: r.cfg.MaxBackoff}
	for {
		started := time.Now()
		err := r.serve(s)
		r.mu.Lock()
		closed := r.closed
		r.mu.Unlock()
		if closed || r.ctx.Err() != nil {
			return // Close ended the stream; it waits for us
		}
		r.log.Warn().Err(err).Dur("lasted", time.Since(started)).Msg("connection lost; reconnecting")
		if time.Since(started) > 30*time.Second {
			bo.Reset()
		}
		var se *StreamError
		if errors.As(err, &se) && se.Condition == wire.SeeOtherHost && se.Content != "" {
			r.mu.Lock()
			r.addr = xmppc.RedirectAddr(se.Content, r.cfg.Addr)
			r.mu.Unlock()
		}
		for {
			if !xmppc.Sleep(r.ctx, bo.Next()) {
				return
			}
			s, err = r.connect(r.ctx)
			if err == nil {
				break
			}
			if r.ctx.Err() != nil {
				return
			}
			ev := r.log.Warn()
			var ae *AuthError
			if errors.As(err, &ae) {
				ev = r.log.Error() // lost capability until the password is fixed
			}
			ev.Err(err).Msg("reconnect failed")
		}
		bo.Reset()
	}
}

// serve runs s until its connection ends and returns why.
func (r *Reporter) serve(s *stream) error {
	if err := s.c.ClearDeadlines(); err != nil {
		s.c.Close()
		close(s.readDone)
		return err
	}
	r.mu.Lock()
	r.cur = s
	r.lastRead = time.Now()
	r.signal()
	r.mu.Unlock()
	stopWatch := context.AfterFunc(r.ctx, func() { s.c.Close() })
	go r.writeLoop(s) // owned by serve: it waits for writerDone below
	err := r.readLoop(s)
	close(s.readDone)
	r.mu.Lock()
	r.cur = nil
	r.lostAt = time.Now()
	r.mu.Unlock()
	close(s.stop)
	s.c.Close()
	<-s.writerDone
	stopWatch()
	return err
}

// readLoop handles every element of s until the stream ends.
func (r *Reporter) readLoop(s *stream) error {
	for {
		el, err := s.c.Dec.Next()
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.lastRead = time.Now()
		r.mu.Unlock()
		switch el.Name.Space {
		case wire.NSStream:
			if el.Name.Local == "error" {
				return xmppc.ParseStreamError(el)
			}
		case wire.NSSM:
			if err := r.handleSM(el); err != nil {
				return err
			}
		case wire.NSClient:
			r.mu.Lock()
			r.inRecv++
			r.mu.Unlock()
			r.handleStanza(el)
		}
	}
}

// handleSM handles <r/> and <a/>.
func (r *Reporter) handleSM(el *wire.Element) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch el.Name.Local {
	case "r":
		r.extra = append(r.extra, outb{b: wire.Ack(r.inRecv)})
		r.signal()
	case "a":
		h, err := strconv.ParseUint(el.Get("h"), 10, 32)
		if err != nil {
			return fmt.Errorf("invalid ack %s", el.Raw)
		}
		if err := r.ackLocked(uint32(h)); err != nil {
			return err
		}
		if r.syncing {
			// The answer to the <r/> sent on resumption: h is everything
			// the server has from the old stream. Re-send the rest.
			r.syncing = false
			r.outSent = uint32(h)
			r.inflight, r.sentN = nil, 0
		}
		r.rPending = false
		r.signal()
	}
	return nil
}

// errAckBeyondSent: the server's h counts stanzas this stream never sent.
// Such an h proves nothing about the reports in flight, so none of them is
// completed: the stream is dropped, the next one binds anew (no resume of
// counts that disagree) and re-sends every report still in the outbox; the
// server's dedupe drops those it already has.
var errAckBeyondSent = errors.New("reporter: the server acknowledged more stanzas than were sent")

// ackLocked completes the written stanzas up to h. Called with r.mu held.
func (r *Reporter) ackLocked(h uint32) error {
	if !r.syncing && len(r.inflight) > 0 && before(r.outSent, h) {
		r.log.Warn().Uint32("h", h).Uint32("sent", r.outSent).Msg("server acked more than was sent; binding a new session")
		r.smID = ""
		return errAckBeyondSent
	}
	n := 0
	freed := false
	for n < len(r.inflight) && !before(h, r.inflight[n].seq) {
		if it := r.inflight[n].it; it != nil {
			r.complete(it)
			freed = true
		}
		r.inflight[n] = flight{}
		n++
	}
	r.inflight = r.inflight[n:]
	if freed {
		close(r.spaceCh)
		r.spaceCh = make(chan struct{})
	}
	return nil
}

// complete removes an acked item from the outbox and wakes its Report.
func (r *Reporter) complete(it *item) {
	for i, o := range r.outbox {
		if o == it {
			r.outbox = append(r.outbox[:i], r.outbox[i+1:]...)
			if i < r.sentN {
				r.sentN--
			}
			break
		}
	}
	close(it.done)
}

// handleStanza handles a stanza from the server.
func (r *Reporter) handleStanza(el *wire.Element) {
	typ := el.Get("type")
	switch el.Name.Local {
	case "message":
		if typ == "error" && r.setError(el) {
			return
		}
		r.hmu.Lock()
		h := r.onMessage
		r.hmu.Unlock()
		if h != nil {
			from, raw := el.Get("from"), el.Raw
			r.call(func() { h(from, raw) })
		}
	case "iq":
		if typ != "get" && typ != "set" {
			return // we send no IQ requests: results and errors are stray
		}
		r.handleIQ(el)
	}
}

// setError records the error reply to a queued report; false if it
// answers none.
func (r *Reporter) setError(el *wire.Element) bool {
	id := el.Get("id")
	if id == "" {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, it := range r.outbox {
		if it.id == id {
			it.err = xmppc.ParseStanzaError(el.Raw)
			return true
		}
	}
	return false
}

func (r *Reporter) handleIQ(el *wire.Element) {
	kids, err := xmppc.Children(el.Raw)
	if err != nil || len(kids) != 1 {
		r.sendStanza(wire.StanzaError(el, "modify", "bad-request", "an IQ get or set has exactly one child"))
		return
	}
	if kids[0].Name.Space == "urn:xmpp:ping" && el.Get("type") == "get" {
		r.sendStanza(iqResult(el, nil))
		return
	}
	r.hmu.Lock()
	h := r.onIQ
	r.hmu.Unlock()
	if h == nil {
		r.sendStanza(wire.StanzaError(el, "cancel", "service-unavailable", ""))
		return
	}
	req := Request{From: el.Get("from"), To: el.Get("to"), ID: el.Get("id"), Type: el.Get("type"),
		Payload: kids[0].Raw, Stanza: el.Raw}
	r.call(func() {
		payload, err := h(r.ctx, req)
		var se *StanzaError
		switch {
		case errors.As(err, &se):
			r.sendStanza(wire.StanzaError(el, se.Type, se.Condition, se.Text))
		case err != nil:
			r.sendStanza(wire.StanzaError(el, "cancel", "internal-server-error", err.Error()))
		default:
			if payload != nil && xmppc.CheckElement(payload) != nil {
				r.log.Warn().Str("id", req.ID).Msg("IQ handler returned a payload that is not one XML element")
				r.sendStanza(wire.StanzaError(el, "cancel", "internal-server-error", "invalid reply payload"))
				return
			}
			r.sendStanza(iqResult(el, payload))
		}
	})
}

func iqResult(el *wire.Element, payload []byte) []byte {
	b := []byte("<iq type='result'")
	if to := el.Get("from"); to != "" {
		b = wire.AppendAttr(b, "to", to)
	}
	b = wire.AppendAttr(b, "id", el.Get("id"))
	if len(payload) == 0 {
		return append(b, "/>"...)
	}
	b = append(b, '>')
	b = append(b, payload...)
	return append(b, "</iq>"...)
}

// sendStanza queues a stanza outside the outbox (IQ replies) on the
// current stream; it is dropped when there is none (the requester times
// out and asks again).
func (r *Reporter) sendStanza(b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil {
		return
	}
	r.extra = append(r.extra, outb{b: b, stanza: true})
	r.signal()
}

// takeWrites returns what the writer should write next and counts the
// stanzas among it. Called by the writer.
func (r *Reporter) takeWrites(buf [][]byte) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	keep := r.extra[:0]
	for _, o := range r.extra {
		if o.stanza && r.syncing {
			keep = append(keep, o) // counted only once the counts agree again
			continue
		}
		if o.stanza {
			r.outSent++
			r.inflight = append(r.inflight, flight{seq: r.outSent})
		}
		buf = append(buf, o.b)
	}
	clear(r.extra[len(keep):])
	r.extra = keep
	if !r.syncing {
		for ; r.sentN < len(r.outbox); r.sentN++ {
			it := r.outbox[r.sentN]
			r.outSent++
			r.inflight = append(r.inflight, flight{seq: r.outSent, it: it})
			buf = append(buf, it.raw)
		}
	}
	if len(r.inflight) > 0 && !r.rPending {
		r.rPending, r.rSentAt = true, time.Now()
		buf = append(buf, []byte("<r "+smNS+"/>"))
	}
	return buf
}

// checkAlive probes a silent connection with <r/>; false when an <r/>
// went unanswered for AckTimeout.
func (r *Reporter) checkAlive() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.rPending {
		return now.Sub(r.rSentAt) < r.cfg.AckTimeout
	}
	if now.Sub(r.lastRead) >= r.cfg.KeepAlive {
		r.rPending, r.rSentAt = true, now
		r.extra = append(r.extra, outb{b: []byte("<r " + smNS + "/>")})
		r.signal()
	}
	return true
}

// writeLoop writes queued stanzas and nonzas onto s until s stops.
func (r *Reporter) writeLoop(s *stream) {
	defer close(s.writerDone)
	nc := s.c.NetConn()
	bw := bufio.NewWriterSize(nc, 16<<10)
	tick := time.NewTicker(min(r.cfg.KeepAlive, r.cfg.AckTimeout) / 4)
	defer tick.Stop()
	var buf [][]byte
	for {
		buf = r.takeWrites(buf[:0])
		if len(buf) == 0 {
			select {
			case <-r.wake:
			case <-s.stop:
				return
			case <-tick.C:
				if !r.checkAlive() {
					r.log.Warn().Dur("ack_timeout", r.cfg.AckTimeout).Msg("no ack from the server; dropping the connection")
					s.c.Close()
					return
				}
			}
			continue
		}
		if err := nc.SetWriteDeadline(time.Now().Add(r.cfg.Timeout)); err != nil {
			s.c.Close()
			return
		}
		for _, b := range buf {
			_, _ = bw.Write(b) // an error sticks in bw and shows at Flush
		}
		if err := bw.Flush(); err != nil {
			r.log.Debug().Err(err).Msg("write failed")
			s.c.Close() // ends the read loop, which reconnects
			return
		}
		clear(buf)
	}
}
