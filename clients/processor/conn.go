package processor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmppc"
)

// closeLinger is how long a closing connection waits for the node's
// </stream:stream> after ours.
const closeLinger = 2 * time.Second

// entry is one received stanza on its way through the handler.
type entry struct {
	seq  uint32 // XEP-0198 count; 0: received before <enabled/>, not acked
	el   *wire.Element
	done bool // an IQ reply already handed to its waiter
}

// pconn is one component connection: Processor.serve's goroutine reads it,
// writeLoop writes it, handleLoop calls the Handler.
type pconn struct {
	p      *Processor
	c      *xmppc.Conn
	ctx    context.Context // ends when the connection ended
	cancel context.CancelFunc
	hctx   context.Context // the handler's: ends with the connection or Run
	hstop  context.CancelFunc
	wake   chan struct{} // writer
	qwake  chan struct{} // handler

	mu      sync.Mutex // guards everything below
	out     [][]byte
	queue   []entry
	recv    uint32 // stanzas received since <enabled/>
	handled uint32 // contiguous prefix handled without error
	ackSent uint32
	rAsked  bool  // the node sent <r/>: answer even if nothing changed
	closing bool  // write </stream:stream> after the pending ack
	failed  error // the handler error that closes the connection
	iqs     map[string]chan *wire.Element
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// serve runs one connection until it ends and returns why.
func (p *Processor) serve(ctx context.Context, c *xmppc.Conn, early []*wire.Element) error {
	cctx, cancel := context.WithCancel(context.Background())
	hctx, hstop := context.WithCancel(ctx)
	pc := &pconn{p: p, c: c, ctx: cctx, cancel: cancel, hctx: hctx, hstop: hstop, wake: make(chan struct{}, 1), qwake: make(chan struct{}, 1),
		iqs: make(map[string]chan *wire.Element)}
	for _, el := range early {
		e := entry{el: el}
		if isPing(el) {
			pc.out = append(pc.out, pong(el)) // the writer starts with it
			e.done = true
		}
		pc.queue = append(pc.queue, e)
	}
	p.mu.Lock()
	p.cur = pc
	close(p.curCh)
	p.curCh = make(chan struct{})
	p.mu.Unlock()

	writerDone, handlerDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(writerDone); pc.writeLoop() }()   // owned by serve: waited for below
	go func() { defer close(handlerDone); pc.handleLoop() }() // owned by serve: waited for below
	// Run's end: ack what is handled, say goodbye, linger for the node's
	// </stream:stream>.
	stopWatch := context.AfterFunc(ctx, func() { pc.close(nil) })
	err := pc.readLoop()
	stopWatch()
	p.mu.Lock()
	if p.cur == pc {
		p.cur = nil
	}
	p.mu.Unlock()
	cancel()
	hstop()
	c.Close()
	<-writerDone
	<-handlerDone
	pc.mu.Lock()
	if pc.failed != nil {
		err = pc.failed
	}
	pc.mu.Unlock()
	return err
}

// close makes the writer send the pending ack and </stream:stream>; cause
// is the handler error, nil for a shutdown.
func (pc *pconn) close(cause error) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closing {
		return
	}
	pc.closing, pc.failed = true, cause
	signal(pc.wake)
}

// readLoop reads until the stream ends.
func (pc *pconn) readLoop() error {
	for {
		el, err := pc.c.Dec.Next()
		if err != nil {
			if errors.Is(err, wire.ErrStreamEnd) {
				return errors.New("the node closed the stream")
			}
			return err
		}
		switch el.Name.Space {
		case wire.NSStream:
			if el.Name.Local == "error" {
				return xmppc.ParseStreamError(el)
			}
		case wire.NSSM:
			if el.Name.Local == "r" {
				pc.mu.Lock()
				pc.rAsked = true
				pc.mu.Unlock()
				signal(pc.wake)
			}
		case wire.NSComponent:
			pc.received(el)
		}
	}
}

// received queues a stanza for the handler; replies to our IQs go to
// their waiter at once (the handler may be the one waiting).
func (pc *pconn) received(el *wire.Element) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.recv++
	e := entry{seq: pc.recv, el: el}
	if el.Name.Local == "iq" && (el.Get("type") == "result" || el.Get("type") == "error") {
		if ch, ok := pc.iqs[el.Get("id")]; ok {
			delete(pc.iqs, el.Get("id"))
			ch <- el // buffered 1, one reply per id
			e.done = true
		}
	}
	if isPing(el) {
		pc.out = append(pc.out, pong(el))
		signal(pc.wake)
		e.done = true
	}
	pc.queue = append(pc.queue, e)
	signal(pc.qwake)
}

// pong is the answer to the ping el. The SDK answers XEP-0199 pings
// itself: before <enabled/> the node confirms what it delivered with a
// ping and deletes the rows on the answer; later it pings an idle stream.
func pong(el *wire.Element) []byte {
	b := []byte("<iq type='result'")
	b = wire.AppendAttr(b, "id", el.Get("id"))
	b = wire.AppendAttr(b, "from", el.Get("to"))
	b = wire.AppendAttr(b, "to", el.Get("from"))
	return append(b, "/>"...)
}

// isPing reports whether el is an XEP-0199 ping request.
func isPing(el *wire.Element) bool {
	if el.Name.Local != "iq" || el.Get("type") != "get" {
		return false
	}
	kids, err := xmppc.Children(el.Raw)
	return err == nil && len(kids) == 1 && kids[0].Name.Space == "urn:xmpp:ping" && kids[0].Name.Local == "ping"
}

// handleLoop calls the Handler for each stanza in order and advances the
// ack; the first error closes the connection.
func (pc *pconn) handleLoop() {
	for {
		pc.mu.Lock()
		var e entry
		ok := len(pc.queue) > 0 && !pc.closing
		if ok {
			e = pc.queue[0]
			pc.queue[0] = entry{}
			pc.queue = pc.queue[1:]
		}
		pc.mu.Unlock()
		if !ok {
			select {
			case <-pc.qwake:
				continue
			case <-pc.ctx.Done():
				return
			}
		}
		if !e.done {
			if err := pc.call(e.el); err != nil {
				pc.p.log.Warn().Err(err).Str("from", e.el.Get("from")).Str("id", e.el.Get("id")).
					Msg("handler failed; closing the connection so that the node redelivers")
				pc.close(err)
				return
			}
		}
		if e.seq != 0 {
			pc.mu.Lock()
			pc.handled = e.seq
			pc.mu.Unlock()
			signal(pc.wake)
		}
	}
}

// call runs the Handler; a panic counts as an error.
func (pc *pconn) call(el *wire.Element) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("processor: handler panicked: %v", v)
		}
	}()
	r := Report{From: el.Get("from"), To: el.Get("to"), ID: el.Get("id"), Name: el.Name.Local,
		Type: el.Get("type"), Stanza: el.Raw}
	if kids, kerr := xmppc.Children(el.Raw); kerr == nil {
		for _, k := range kids {
			if l := k.Name.Local; l != "body" && l != "subject" && l != "thread" {
				r.Payload = k.Raw
				break
			}
		}
	}
	return pc.p.cfg.Handler(pc.hctx, r)
}

// write queues b for the writer.
func (pc *pconn) write(b []byte) {
	pc.mu.Lock()
	pc.out = append(pc.out, b)
	pc.mu.Unlock()
	signal(pc.wake)
}

// writeLoop writes queued stanzas and acks; after a close it lingers for
// the node's end of stream.
func (pc *pconn) writeLoop() {
	nc := pc.c.NetConn()
	bw := bufio.NewWriterSize(nc, 16<<10)
	for {
		pc.mu.Lock()
		out := pc.out
		pc.out = nil
		if pc.handled != pc.ackSent || pc.rAsked {
			out = append(out, wire.Ack(pc.handled))
			pc.ackSent, pc.rAsked = pc.handled, false
		}
		closing := pc.closing
		pc.mu.Unlock()
		if closing {
			out = append(out, []byte("</stream:stream>"))
		}
		if len(out) > 0 {
			if err := nc.SetWriteDeadline(time.Now().Add(pc.p.cfg.Timeout)); err != nil {
				pc.c.Close()
				return
			}
			for _, b := range out {
				_, _ = bw.Write(b) // an error sticks in bw and shows at Flush
			}
			if err := bw.Flush(); err != nil {
				pc.c.Close() // ends the read loop
				return
			}
		}
		if closing {
			// Half-close so the node reads everything we sent (closing with
			// unread input would reset the connection), then give it a
			// moment to answer before the read loop is cut off.
			if tc, ok := nc.(*net.TCPConn); ok {
				_ = tc.CloseWrite() // best effort: the deadline below ends it anyway
			}
			_ = nc.SetReadDeadline(time.Now().Add(closeLinger)) // fails only on a closed conn
			return
		}
		select {
		case <-pc.wake:
		case <-pc.ctx.Done():
			return
		}
	}
}
