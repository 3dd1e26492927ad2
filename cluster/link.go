package cluster

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// frameType is the first byte of every link frame.
type frameType byte

const (
	frameDelta           frameType = 1 // owner's changed sessions
	frameSnapshot        frameType = 2 // owner's complete session list
	frameSnapshotRequest frameType = 3 // "send me your snapshot"
	frameStanza          frameType = 4 // a routed stanza for a local target
	frameStanzaAcked     frameType = 5 // a routed stanza whose receipt is wanted
	frameAck             frameType = 6 // receipt of an acked stanza
)

func (t frameType) String() string {
	switch t {
	case frameDelta:
		return "delta"
	case frameSnapshot:
		return "snapshot"
	case frameSnapshotRequest:
		return "snapshot-request"
	case frameStanza:
		return "stanza"
	case frameStanzaAcked:
		return "stanza-acked"
	case frameAck:
		return "ack"
	}
	return fmt.Sprintf("frame(%d)", byte(t))
}

const (
	// maxFrame bounds one frame (a 1M-entry snapshot is about 50 MB).
	maxFrame = 128 << 20
	// handshakeTimeout bounds the link handshake.
	handshakeTimeout = 5 * time.Second
	linkMagic        = "XCL1"
	nonceSize        = 32
)

// outFrame is a queued frame. Stanza frames keep their target so that they
// can be reported undelivered if the link dies.
type outFrame struct {
	typ  frameType
	to   string // stanza frames only
	seq  uint64 // acked stanza frames only
	body []byte
}

func isStanzaFrame(t frameType) bool { return t == frameStanza || t == frameStanzaAcked }

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

// enqueueAcked queues a stanza whose receipt calls done; it never blocks.
// done is not called when enqueueAcked returns an error.
func (l *link) enqueueAcked(to string, body []byte, done func(error)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrLinkDown
	}
	l.seq++
	f := outFrame{typ: frameStanzaAcked, to: to, seq: l.seq, body: body}
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

func writeOut(w *bufio.Writer, f outFrame) error {
	if !isStanzaFrame(f.typ) {
		return writeFrame(w, f.typ, f.body)
	}
	var hdr [5]byte
	var to []byte
	if f.typ == frameStanzaAcked {
		to = binary.AppendUvarint(to, f.seq)
	}
	to = binary.AppendUvarint(to, uint64(len(f.to)))
	n := 1 + len(to) + len(f.to) + len(f.body)
	binary.BigEndian.PutUint32(hdr[:4], uint32(n))
	hdr[4] = byte(f.typ)
	w.Write(hdr[:])     //nolint:errcheck // bufio.Writer keeps the first error; Flush reports it
	w.Write(to)         //nolint:errcheck // see above
	w.WriteString(f.to) //nolint:errcheck // see above
	_, err := w.Write(f.body)
	return err
}

func writeFrame(w *bufio.Writer, t frameType, body []byte) error {
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(1+len(body)))
	hdr[4] = byte(t)
	w.Write(hdr[:]) //nolint:errcheck // bufio.Writer keeps the first error
	_, err := w.Write(body)
	return err
}

// frameInitialBuffer is what readFrame reserves before a body arrives.
const frameInitialBuffer = 64 << 10

// readFrame reads one frame; body is freshly allocated.
func readFrame(r *bufio.Reader) (frameType, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 1 || n > maxFrame {
		return 0, nil, fmt.Errorf("frame length %d out of range", n)
	}
	// Memory grows with the bytes that really arrive, not with the length a
	// peer declares: a header alone cannot make the node allocate maxFrame.
	var body bytes.Buffer
	body.Grow(int(min(n-1, frameInitialBuffer)))
	if _, err := io.CopyN(&body, r, int64(n-1)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("frame body: %w", err)
	}
	return frameType(hdr[4]), body.Bytes(), nil
}

// Handshake (both sides prove knowledge of the key and bind both names; with
// a key it runs inside TLS, see linktls.go):
//
//	dialer   -> magic, name, nonceD
//	acceptor -> magic, name, nonceA, hasKey, [HMAC(key, "acceptor"|nonceD|nonceA|nameD|nameA)]
//	dialer   -> hasKey, [HMAC(key, "dialer"|nonceA|nonceD|nameD|nameA)]
//	acceptor -> status (0 accepted, 1 refused: proof, 2 refused: not a member)
//
// Status 2 comes only after a valid proof: the acceptor tells a key holder
// that it does not count it among the members (yet); the dialer retries.

func linkMAC(key []byte, role string, n1, n2 []byte, dialer, acceptor string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range [][]byte{[]byte(role), n1, n2, []byte(dialer), {0}, []byte(acceptor)} {
		m.Write(p) //nolint:errcheck // hash.Hash never fails
	}
	return m.Sum(nil)
}

func writeHello(w io.Writer, name string, nonce []byte) error {
	b := append([]byte(linkMagic), byte(len(name)))
	b = append(b, name...)
	b = append(b, nonce...)
	_, err := w.Write(b)
	return err
}

func readHello(r io.Reader) (name string, nonce []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", nil, fmt.Errorf("read hello: %w", err)
	}
	if hdr[0] == 0x16 && hdr[1] == 0x03 { // a TLS handshake record
		return "", nil, fmt.Errorf("%w: peer opened a TLS link: it has a secret key, this node has none", ErrAuth)
	}
	if string(hdr[:4]) != linkMagic {
		return "", nil, errors.New("not an xcollect link (bad magic)")
	}
	buf := make([]byte, int(hdr[4])+nonceSize)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", nil, fmt.Errorf("read hello: %w", err)
	}
	return string(buf[:hdr[4]]), buf[hdr[4]:], nil
}

func writeProof(w io.Writer, mac []byte) error {
	b := []byte{0}
	if mac != nil {
		b[0] = 1
		b = append(b, mac...)
	}
	_, err := w.Write(b)
	return err
}

func readProof(r io.Reader) ([]byte, error) {
	var f [1]byte
	if _, err := io.ReadFull(r, f[:]); err != nil {
		return nil, fmt.Errorf("read proof: %w", err)
	}
	if f[0] == 0 {
		return nil, nil
	}
	mac := make([]byte, sha256.Size)
	if _, err := io.ReadFull(r, mac); err != nil {
		return nil, fmt.Errorf("read proof: %w", err)
	}
	return mac, nil
}

func checkProof(key, got, want []byte) error {
	switch {
	case len(key) == 0 && got == nil:
		return nil
	case len(key) == 0:
		return fmt.Errorf("%w: peer uses a secret key, this node has none", ErrAuth)
	case got == nil:
		return fmt.Errorf("%w: peer sent no proof", ErrAuth)
	case !hmac.Equal(got, want):
		return fmt.Errorf("%w: wrong secret key", ErrAuth)
	}
	return nil
}

func macOrNil(key []byte, role string, n1, n2 []byte, dialer, acceptor string) []byte {
	if len(key) == 0 {
		return nil
	}
	return linkMAC(key, role, n1, n2, dialer, acceptor)
}

// dialHandshake runs the dialer side; it returns an error unless the
// acceptor is the expected peer and accepted us.
func dialHandshake(conn net.Conn, key []byte, self, peer string) error {
	if err := conn.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return err
	}
	nd := make([]byte, nonceSize)
	rand.Read(nd) //nolint:errcheck // crypto/rand.Read never fails (Go 1.24+)
	if err := writeHello(conn, self, nd); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	name, na, err := readHello(conn)
	if err != nil {
		if len(key) == 0 && errors.Is(err, io.EOF) {
			return fmt.Errorf("%w (a node with a secret key closes plain links; is the key missing here?)", err)
		}
		return err
	}
	if name != peer {
		return fmt.Errorf("expected node %s, reached %s", peer, name)
	}
	got, err := readProof(conn)
	if err != nil {
		return err
	}
	if err := checkProof(key, got, macOrNil(key, "acceptor", nd, na, self, peer)); err != nil {
		return err
	}
	if err := writeProof(conn, macOrNil(key, "dialer", na, nd, self, peer)); err != nil {
		return fmt.Errorf("write proof: %w", err)
	}
	var st [1]byte
	if _, err := io.ReadFull(conn, st[:]); err != nil {
		return fmt.Errorf("%w: refused by %s (%v)", ErrAuth, peer, err)
	}
	switch st[0] {
	case 0:
	case statusNotMember:
		return fmt.Errorf("%w: %s does not count %s among its members (yet), or not at this address", ErrNotMember, peer, self)
	default:
		return fmt.Errorf("%w: refused by %s", ErrAuth, peer)
	}
	return conn.SetDeadline(time.Time{})
}

// Handshake status bytes.
const (
	statusAccepted  = 0
	statusRefused   = 1
	statusNotMember = 2
)

// acceptHandshake runs the acceptor side and returns the dialer's name.
// admit, called once the dialer proved the key, refuses a dialer that is
// not a current member (nil admits everyone: handshake tests).
func acceptHandshake(conn net.Conn, key []byte, self string, admit func(peer string) error) (string, error) {
	if err := conn.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return "", err
	}
	peer, nd, err := readHello(conn)
	if err != nil {
		return "", err
	}
	if peer == "" || peer == self {
		return "", fmt.Errorf("bad peer name %q", peer)
	}
	na := make([]byte, nonceSize)
	rand.Read(na) //nolint:errcheck // crypto/rand.Read never fails (Go 1.24+)
	var b bytes.Buffer
	if err := writeHello(&b, self, na); err != nil {
		return peer, err
	}
	if err := writeProof(&b, macOrNil(key, "acceptor", nd, na, peer, self)); err != nil {
		return peer, err
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		return peer, fmt.Errorf("write hello: %w", err)
	}
	got, err := readProof(conn)
	if err != nil {
		return peer, err
	}
	if err := checkProof(key, got, macOrNil(key, "dialer", na, nd, peer, self)); err != nil {
		_, werr := conn.Write([]byte{statusRefused})
		return peer, errors.Join(err, werr)
	}
	if admit != nil {
		if err := admit(peer); err != nil {
			_, werr := conn.Write([]byte{statusNotMember})
			return peer, errors.Join(err, werr)
		}
	}
	if _, err := conn.Write([]byte{statusAccepted}); err != nil {
		return peer, fmt.Errorf("write status: %w", err)
	}
	return peer, conn.SetDeadline(time.Time{})
}
