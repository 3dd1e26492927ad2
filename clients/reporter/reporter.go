package reporter

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmppc"
)

// Defaults of Config fields left zero.
const (
	DefaultOutboxSize   = 1000             // reports waiting for their ack
	DefaultTimeout      = 30 * time.Second // one negotiation step or write
	DefaultAckTimeout   = 60 * time.Second // an unanswered <r/> means a dead connection
	DefaultKeepAlive    = 60 * time.Second // silence before we probe with <r/>
	DefaultMinBackoff   = 200 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
	DefaultMaxRedirects = 5 // see-other-host hops per connection attempt
)

// Config configures a Reporter. Only Addr, JID and Password are required.
type Config struct {
	// Addr is host:port of a node's c2s listener, e.g. "127.0.0.1:5222".
	Addr string
	// JID is the account's bare JID, user@domain.
	JID string
	// Password is the account's password.
	Password string
	// Resource is the resource to bind; "" lets the server choose once and
	// the Reporter keeps that resource across reconnects.
	Resource string
	// TLS configures STARTTLS; nil uses the system roots with the JID's
	// domain as ServerName.
	TLS *tls.Config
	// InsecureSkipVerify accepts any server certificate (self-signed test
	// nodes). Never in production.
	InsecureSkipVerify bool
	// AllowPlaintext allows a server that does not offer STARTTLS. Default
	// false: TLS is required (the RequireTLS=true default, spelled so that
	// the zero Config is the safe one). STARTTLS is always used when
	// offered.
	AllowPlaintext bool
	// OutboxSize bounds the reports (and presences) waiting for their ack.
	// Default DefaultOutboxSize. When full, Report blocks until there is
	// room or its context ends.
	OutboxSize int
	// Logger receives lifecycle logs (connected, lost, resumed); default a
	// disabled logger.
	Logger zerolog.Logger
	// ResumeTimeout is how long after losing the connection the Reporter
	// tries to resume the stream (XEP-0198) instead of binding anew. 0 uses
	// the server's max; negative never resumes.
	ResumeTimeout time.Duration
	// Timeout bounds each negotiation step and each write. Default
	// DefaultTimeout.
	Timeout time.Duration
	// AckTimeout is how long an <r/> may stay unanswered before the
	// connection counts as dead and is replaced. Default DefaultAckTimeout.
	AckTimeout time.Duration
	// KeepAlive is the silence after which the Reporter sends an <r/> to
	// check the connection. Default DefaultKeepAlive.
	KeepAlive time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay, which doubles per
	// failed attempt with jitter. Defaults DefaultMinBackoff,
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// MaxRedirects bounds see-other-host hops per attempt. Default
	// DefaultMaxRedirects.
	MaxRedirects int
	// Dial opens the TCP connection; nil uses net.Dialer. Tests and proxies
	// hook in here.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// IQHandler answers an IQ get or set (a command from a processor). It
// returns the payload of the result (nil: an empty result) or an error: a
// *StanzaError is sent as given, any other error as
// internal-server-error with the error's text. ctx ends at Close.
type IQHandler func(ctx context.Context, req Request) ([]byte, error)

// MessageHandler receives a message addressed to the reporter: from is
// the sender's JID, el the whole <message/> element.
type MessageHandler func(from string, el []byte)

// Request is an IQ get or set addressed to the reporter.
type Request struct {
	From, To, ID string
	// Type is "get" or "set".
	Type string
	// Payload is the IQ's child element (nil when it has none).
	Payload []byte
	// Stanza is the whole <iq/> as received.
	Stanza []byte
}

// Reporter is one account's connection to xcollect. Its methods are safe
// for concurrent use. Connect starts two goroutines (the connection
// supervisor, which runs the read loop, and the handler dispatcher) plus
// one writer per live connection; Close stops all of them.
type Reporter struct {
	cfg    Config
	log    zerolog.Logger
	local  string
	domain string

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // supervisor and dispatcher

	hmu       sync.Mutex
	onMessage MessageHandler
	onIQ      IQHandler
	calls     []func()
	callWake  chan struct{}

	mu       sync.Mutex // guards everything below
	started  bool
	closed   bool
	outbox   []*item       // unacked reports and presences, in send order
	spaceCh  chan struct{} // closed (and replaced) when the outbox shrinks
	sentN    int           // outbox[:sentN] were written on the current stream
	inflight []flight      // written stanzas not yet acked, by seq
	outSent  uint32        // stanzas written since <enable/> (XEP-0198 count)
	inRecv   uint32        // stanzas received since <enable/>
	syncing  bool          // resumed: waiting for the <a/> that says what the server has
	rPending bool
	rSentAt  time.Time
	lastRead time.Time
	extra    []outb        // queued writes other than the outbox
	wake     chan struct{} // wakes the current writer
	cur      *stream
	smID     string // resumable stream id; "" when not resumable
	smMax    time.Duration
	lostAt   time.Time
	fullJID  string
	resource string
	addr     string // node of the last stream (after redirects); "" = cfg.Addr
	presence []byte
}

type item struct {
	id   string
	raw  []byte
	done chan struct{} // closed when acked
	err  error         // set before done closes: the server's error reply
}

type flight struct {
	seq uint32
	it  *item // nil for stanzas outside the outbox (IQ replies, presence)
}

type outb struct {
	b      []byte
	stanza bool
}

// New checks cfg and returns a Reporter; it does not connect.
func New(cfg Config) (*Reporter, error) {
	j, err := jid.Parse(cfg.JID)
	if err != nil || j.Localpart() == "" || j.Resourcepart() != "" {
		return nil, fmt.Errorf("reporter: JID %q: want a bare JID like user@example.com", cfg.JID)
	}
	if cfg.Addr == "" {
		return nil, errors.New("reporter: Addr is empty: want host:port of an xcollect node, e.g. 127.0.0.1:5222")
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("reporter: Addr %q: want host:port: %w", cfg.Addr, err)
	}
	if cfg.OutboxSize <= 0 {
		cfg.OutboxSize = DefaultOutboxSize
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.MaxRedirects <= 0 {
		cfg.MaxRedirects = DefaultMaxRedirects
	}
	if cfg.Dial == nil {
		cfg.Dial = xmppc.Dial
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Reporter{
		cfg:      cfg,
		log:      cfg.Logger.With().Str("jid", j.String()).Logger(),
		local:    j.Localpart(),
		domain:   j.Domainpart(),
		ctx:      ctx,
		cancel:   cancel,
		callWake: make(chan struct{}, 1),
		spaceCh:  make(chan struct{}),
		wake:     make(chan struct{}, 1),
		resource: cfg.Resource,
	}
	return r, nil
}

// OnMessage sets the handler of incoming messages (nil: dropped).
func (r *Reporter) OnMessage(h MessageHandler) {
	r.hmu.Lock()
	r.onMessage = h
	r.hmu.Unlock()
}

// OnIQ sets the handler of incoming IQ get/set (nil: every IQ is answered
// with service-unavailable).
func (r *Reporter) OnIQ(h IQHandler) {
	r.hmu.Lock()
	r.onIQ = h
	r.hmu.Unlock()
}

// JID returns the bound full JID ("" before the first bind).
func (r *Reporter) JID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fullJID
}

// Connect makes the first connection, bounded by ctx, and returns its
// error if it fails (*AuthError for wrong credentials, a *net.OpError when
// nobody listens, *StreamError …); nothing keeps running then. After a
// successful Connect the Reporter keeps the stream up in the background
// until Close, reconnecting with backoff whatever happens.
func (r *Reporter) Connect(ctx context.Context) error {
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return ErrClosed
	case r.started:
		r.mu.Unlock()
		return ErrAlreadyConnected
	}
	r.started = true
	r.mu.Unlock()
	s, err := r.connect(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.started = false
		return err
	}
	if r.closed { // Close ran while we connected
		s.c.Close()
		return ErrClosed
	}
	r.wg.Add(2)
	go r.supervise(s)
	go r.dispatchLoop()
	return nil
}

// Report sends payload (one XML element) in a <message/> to the JID to
// (e.g. a component such as collector.example.com) and returns once the
// server acknowledged it as durable. id is the report's stanza id and its
// XEP-0359 <origin-id/>: random, kept across re-sends (the node drops a
// repeat within the component's dedupe window), visible to the processor.
//
// When the outbox is full Report blocks until there is room; if ctx ends
// first it returns an error matching ErrOutboxFull and ctx.Err(), and the
// report was not queued. If ctx ends after the report was queued, Report
// returns id with ctx's error: the report stays in the outbox and is still
// delivered. A *StanzaError means the server refused the report (e.g.
// resource-constraint: the component's queue is full); it was not stored.
func (r *Reporter) Report(ctx context.Context, to string, payload []byte) (id string, err error) {
	if _, err := jid.Parse(to); err != nil || to == "" {
		return "", fmt.Errorf("reporter: report to %q: not a JID", to)
	}
	if err := xmppc.CheckElement(payload); err != nil {
		return "", fmt.Errorf("reporter: payload: %w", err)
	}
	id = xmppc.RandomID()
	b := make([]byte, 0, len(payload)+96)
	b = append(b, "<message"...)
	b = wire.AppendAttr(b, "to", to)
	b = wire.AppendAttr(b, "id", id)
	b = append(b, '>')
	b = append(b, bytes.TrimSpace(payload)...)
	// XEP-0359: the same id, asserted unique; the node deduplicates on it,
	// and b is what every retry sends.
	b = append(b, "<origin-id xmlns='urn:xmpp:sid:0'"...)
	b = wire.AppendAttr(b, "id", id)
	b = append(b, "/></message>"...)
	it := &item{id: id, raw: b, done: make(chan struct{})}
	if err := r.enqueue(ctx, it); err != nil {
		return "", err
	}
	return id, r.wait(ctx, it)
}

// SetPresence sets the account's presence (RFC 6121 §4): show is "" (available),
// "away", "chat", "dnd", "xa", or "unavailable"; status is free text. It
// returns once the server acknowledged the presence. The presence is sent
// again whenever the Reporter binds a new session.
func (r *Reporter) SetPresence(ctx context.Context, show, status string) error {
	b := []byte("<presence")
	b = wire.AppendAttr(b, "id", xmppc.RandomID())
	switch show {
	case "", "away", "chat", "dnd", "xa":
	case "unavailable":
		b = wire.AppendAttr(b, "type", "unavailable")
	default:
		return fmt.Errorf("reporter: presence show %q: want \"\", away, chat, dnd, xa or unavailable", show)
	}
	b = append(b, '>')
	if show != "" && show != "unavailable" {
		b = append(b, "<show>"+show+"</show>"...)
	}
	if status != "" {
		b = append(b, "<status>"...)
		b = wire.AppendText(b, status)
		b = append(b, "</status>"...)
	}
	b = append(b, "</presence>"...)
	r.mu.Lock()
	r.presence = b
	r.mu.Unlock()
	it := &item{raw: b, done: make(chan struct{})}
	if err := r.enqueue(ctx, it); err != nil {
		return err
	}
	return r.wait(ctx, it)
}

// Pending returns the number of reports (and presences) waiting for an
// ack.
func (r *Reporter) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.outbox)
}

// Flush waits until every queued report was acknowledged, or ctx ends.
func (r *Reporter) Flush(ctx context.Context) error {
	for {
		r.mu.Lock()
		n, ch := len(r.outbox), r.spaceCh
		r.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("reporter: flush: %d reports unacknowledged: %w", n, ctx.Err())
		case <-r.ctx.Done():
			return ErrClosed
		}
	}
}

// Close ends the stream politely (</stream:stream>, waiting up to a
// second for the server's) and stops every goroutine. Reports still in the
// outbox are dropped: their Report calls return ErrClosed. Safe to call
// more than once.
func (r *Reporter) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.wg.Wait()
		return nil
	}
	r.closed = true
	cur := r.cur
	if cur != nil {
		r.extra = append(r.extra, outb{b: []byte("</stream:stream>")})
		r.signal()
	}
	r.mu.Unlock()
	if cur != nil {
		select {
		case <-cur.readDone:
		case <-time.After(time.Second):
		}
	}
	r.cancel()
	r.wg.Wait()
	return nil
}

// enqueue appends it to the outbox, waiting for room.
func (r *Reporter) enqueue(ctx context.Context, it *item) error {
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return ErrClosed
		}
		if len(r.outbox) < r.cfg.OutboxSize {
			r.outbox = append(r.outbox, it)
			r.signal()
			r.mu.Unlock()
			return nil
		}
		ch := r.spaceCh
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrOutboxFull, ctx.Err())
		case <-r.ctx.Done():
			return ErrClosed
		}
	}
}

// wait waits for it's ack.
func (r *Reporter) wait(ctx context.Context, it *item) error {
	select {
	case <-it.done:
		return it.err
	case <-ctx.Done():
		return fmt.Errorf("reporter: not acknowledged yet (still queued, will be delivered): %w", ctx.Err())
	case <-r.ctx.Done():
		return ErrClosed
	}
}

// signal wakes the writer. Called with r.mu held.
func (r *Reporter) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// dispatchLoop calls handlers one at a time, in arrival order.
func (r *Reporter) dispatchLoop() {
	defer r.wg.Done()
	for {
		r.hmu.Lock()
		calls := r.calls
		r.calls = nil
		r.hmu.Unlock()
		for _, f := range calls {
			if r.ctx.Err() != nil {
				return
			}
			f()
		}
		select {
		case <-r.callWake:
		case <-r.ctx.Done():
			return
		}
	}
}

// call queues f for the dispatcher.
func (r *Reporter) call(f func()) {
	r.hmu.Lock()
	r.calls = append(r.calls, f)
	r.hmu.Unlock()
	select {
	case r.callWake <- struct{}{}:
	default:
	}
}
