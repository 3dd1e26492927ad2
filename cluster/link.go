package cluster

import (
	"bufio"
	"net"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
)

// link is one established, authenticated node-to-node connection. Its
// writer goroutine is the only writer of conn and its reader goroutine the
// only reader.
type link struct {
	peer string
	conn net.Conn
	q    chan outFrame
	kick chan struct{} // wakes the writer for a resync
	done chan struct{} // closed by close
	// readerDone is closed when the read loop has returned.
	readerDone chan struct{}
	resync     atomic.Bool // writer must send a snapshot before more frames
	log        zerolog.Logger

	mu      sync.Mutex // guards closed, sends on q, seq and pending
	closed  bool
	seq     uint64
	pending map[uint64]func(error) // acked stanzas waiting for their receipt
}

func newLink(peer string, conn net.Conn, queue int, log zerolog.Logger) *link {
	l := &link{
		peer: peer,
		conn: conn,
		q:    make(chan outFrame, queue),
		kick: make(chan struct{}, 1),
		done: make(chan struct{}),
		log:  log,

		readerDone: make(chan struct{}),
		pending:    make(map[uint64]func(error)),
	}
	l.resync.Store(true) // the first frame on every link is our snapshot
	return l
}

// enqueue queues f without blocking.
func (l *link) enqueue(f outFrame) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrLinkDown
	}
	select {
	case l.q <- f:
		return nil
	default:
		return ErrQueueFull
	}
}

// enqueueAcked queues an acked frame (stanza or control) whose receipt
// calls done; it never blocks. done is not called when enqueueAcked
// returns an error.
func (l *link) enqueueAcked(f outFrame, done func(error)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrLinkDown
	}
	l.seq++
	f.seq = l.seq
	select {
	case l.q <- f:
		l.pending[f.seq] = done
		return nil
	default:
		return ErrQueueFull
	}
}

// acked runs the receipt of seq.
func (l *link) acked(seq uint64) {
	l.mu.Lock()
	done := l.pending[seq]
	delete(l.pending, seq)
	l.mu.Unlock()
	if done != nil {
		done(nil)
	}
}

// failPending fails every receipt still waiting; called once the link is
// closed, when no more receipts can come.
func (l *link) failPending() {
	l.mu.Lock()
	p := l.pending
	l.pending = make(map[uint64]func(error))
	l.mu.Unlock()
	for _, done := range p {
		done(ErrLinkDown)
	}
}

// requestResync makes the writer send a fresh snapshot.
func (l *link) requestResync() {
	l.resync.Store(true)
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// close stops the link; safe to call many times.
func (l *link) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	close(l.done)
	if err := l.conn.Close(); err != nil {
		l.log.Debug().Err(err).Msg("link close")
	}
}

func (l *link) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// writeLoop drains the queue with batching: frames go to a bufio.Writer
// that is flushed when the queue is empty. snapshot builds our snapshot
// frame at the moment it is written. On exit it closes the link and returns
// the stanza frames it could not send: those still queued and those written
// since the last successful flush (these may have reached the peer, so a
// fallback can duplicate one: at-least-once).
func (l *link) writeLoop(snapshot func() []byte) (undelivered []outFrame) {
	w := bufio.NewWriterSize(l.conn, 64<<10)
	var inflight []outFrame
	defer func() {
		l.close()
		undelivered = append(undelivered, inflight...)
		for {
			select {
			case f := <-l.q:
				if isStanzaFrame(f.typ) {
					undelivered = append(undelivered, f)
				}
			default:
				return
			}
		}
	}()
	write := func(f outFrame) error {
		if isStanzaFrame(f.typ) {
			inflight = append(inflight, f)
		}
		return writeOut(w, f)
	}
	for {
		var err error
		if l.resync.Swap(false) {
			err = writeFrame(w, frameSnapshot, snapshot())
		}
		if err == nil {
			select {
			case f := <-l.q:
				err = write(f)
			default:
				if err = w.Flush(); err != nil {
					break
				}
				inflight = inflight[:0]
				select {
				case f := <-l.q:
					err = write(f)
				case <-l.kick:
				case <-l.done:
					return nil
				}
			}
		}
		if err != nil {
			l.log.Debug().Err(err).Msg("link write")
			return nil
		}
	}
}
