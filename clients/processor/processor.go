package processor

import (
	"bytes"
	"context"
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
	DefaultTimeout    = 30 * time.Second // one handshake step or write
	DefaultMinBackoff = 200 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	maxRedirects      = 5 // see-other-host hops per connection attempt
)

// Sentinel errors of the processor package. Match them with errors.Is.
var (
	// ErrRunning is returned by a second concurrent Run.
	ErrRunning = errors.New("processor: already running")
	// ErrConnectionLost is returned by IQ when the connection ended before
	// the reply came: the request may or may not have been handled.
	ErrConnectionLost = errors.New("processor: connection lost before the reply")
)

// StreamError is a stream error from the node, e.g. not-authorized (wrong
// secret), host-unknown (no such component configured), conflict (the
// component is connected elsewhere and allows one connection).
type StreamError = xmppc.StreamError

// StanzaError is an error reply (RFC 6120 §8.3), returned by IQ.
type StanzaError = xmppc.StanzaError

// Report is one stanza delivered to the component: normally a report
// <message/> from a user, also presence and IQs addressed to the component.
type Report struct {
	// From is the sender's full JID, To the component (or a JID at it).
	From, To string
	// ID is the stanza id: for reporter SDK reports, stable across the
	// sender's retries.
	ID string
	// Name is message, presence or iq; Type its type attribute.
	Name, Type string
	// Stanza is the whole stanza as the node stored it.
	Stanza []byte
	// Payload is the first child element other than body, subject and
	// thread (the report's data), nil when there is none.
	Payload []byte
}

// Handler handles one stanza. Returning nil acks it (together with all
// before it); returning an error closes the connection and the node
// redelivers the stanza after the reconnect. ctx ends when the connection
// or Run ends.
type Handler func(ctx context.Context, r Report) error

// Config configures a Processor. Addr, JID, Secret and Handler are
// required.
type Config struct {
	// Addr is host:port of a node's component listener, e.g.
	// "127.0.0.1:5347".
	Addr string
	// JID is the component's JID as configured on the node, e.g.
	// collector.example.com.
	JID string
	// Secret is the component's shared secret.
	Secret string
	// Handler is called for each incoming stanza.
	Handler Handler
	// Logger receives lifecycle logs; default a disabled logger.
	Logger zerolog.Logger
	// Timeout bounds each handshake step and write. Default DefaultTimeout.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay (doubling with
	// jitter). Defaults DefaultMinBackoff, DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Dial opens the TCP connection; nil uses net.Dialer.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Processor is one component connection kept up by Run. Send, Message and
// IQ are safe for concurrent use, also from the Handler.
type Processor struct {
	cfg Config
	log zerolog.Logger

	mu      sync.Mutex
	running bool
	cur     *pconn
	curCh   chan struct{} // closed (and replaced) when a connection goes up
}

// New checks cfg and returns a Processor; Run connects it.
func New(cfg Config) (*Processor, error) {
	j, err := jid.Parse(cfg.JID)
	if err != nil || j.Localpart() != "" || j.Resourcepart() != "" {
		return nil, fmt.Errorf("processor: JID %q: want a component domain like collector.example.com", cfg.JID)
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("processor: Addr %q: want host:port of a component listener, e.g. 127.0.0.1:5347", cfg.Addr)
	}
	if cfg.Handler == nil {
		return nil, errors.New("processor: Handler is nil")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.Dial == nil {
		cfg.Dial = xmppc.Dial
	}
	return &Processor{cfg: cfg, log: cfg.Logger.With().Str("component", cfg.JID).Logger(), curCh: make(chan struct{})}, nil
}

// Run connects and handles stanzas until ctx ends, then closes the stream
// politely and returns nil. If the first connection fails Run returns its
// error (a *StreamError such as not-authorized, or a network error) — but
// a conflict is retried, since it is usually this processor's predecessor
// that the node has not yet seen go; after one success it reconnects with
// backoff whatever happens. Run starts, per
// connection, a writer and a handler goroutine and waits for both before
// it returns.
func (p *Processor) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.running {
		p.mu.Unlock()
		return ErrRunning
	}
	p.running = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.running = false
		p.mu.Unlock()
	}()
	bo := xmppc.Backoff{Min: p.cfg.MinBackoff, Max: p.cfg.MaxBackoff}
	first := true
	for {
		c, early, err := p.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// A conflict at start is usually our own predecessor whose
			// connection the node has not seen end yet: wait and retry.
			var se *xmppc.StreamError
			if first && !(errors.As(err, &se) && se.Condition == "conflict") {
				return err
			}
			p.log.Warn().Err(err).Msg("connect failed; retrying")
			if !xmppc.Sleep(ctx, bo.Next()) {
				return nil
			}
			continue
		}
		first = false
		started := time.Now()
		err = p.serve(ctx, c, early)
		if ctx.Err() != nil {
			return nil
		}
		p.log.Warn().Err(err).Dur("lasted", time.Since(started)).Msg("connection ended; reconnecting")
		if time.Since(started) > 30*time.Second {
			bo.Reset()
		}
		if !xmppc.Sleep(ctx, bo.Next()) {
			return nil
		}
	}
}

// dial connects, handshakes and enables stream management. Stanzas that
// arrive before <enabled/> are returned to be handled without acks (the
// node confirms those with an XEP-0199 ping, which pconn answers).
func (p *Processor) dial(ctx context.Context) (*xmppc.Conn, []*wire.Element, error) {
	addr := p.cfg.Addr
	var c *xmppc.Conn
	for hops := 0; ; hops++ {
		nc, err := p.cfg.Dial(ctx, addr)
		if err != nil {
			return nil, nil, fmt.Errorf("processor: connect to %s: %w", addr, err)
		}
		c, err = xmppc.OpenComponent(ctx, nc, p.cfg.JID, p.cfg.Secret, p.cfg.Timeout)
		var se *StreamError
		if errors.As(err, &se) && se.Condition == wire.SeeOtherHost && se.Content != "" && hops < maxRedirects {
			next := xmppc.RedirectAddr(se.Content, p.cfg.Addr)
			p.log.Info().Str("from", addr).Str("to", next).Msg("see-other-host: following the redirect")
			addr = next
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("processor: %s: %w", addr, err)
		}
		break
	}
	var early []*wire.Element
	el, err := c.Step(ctx, []byte("<enable xmlns='urn:xmpp:sm:3'/>"))
	for i := 0; err == nil && el.Name.Space == wire.NSComponent && i < 10000; i++ {
		early = append(early, el)
		el, err = c.Step(ctx, nil)
	}
	if err == nil && (el.Name.Space != wire.NSSM || el.Name.Local != "enabled") {
		err = fmt.Errorf("enable stream management: %s", el.Raw)
	}
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("processor: %s: %w", addr, err)
	}
	if err := c.ClearDeadlines(); err != nil {
		c.Close()
		return nil, nil, err
	}
	p.log.Info().Str("addr", addr).Msg("component connected")
	return c, early, nil
}

// current waits for a live connection.
func (p *Processor) current(ctx context.Context) (*pconn, error) {
	for {
		p.mu.Lock()
		pc, ch := p.cur, p.curCh
		p.mu.Unlock()
		if pc != nil {
			return pc, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("processor: not connected: %w", ctx.Err())
		}
	}
}

// Send writes stanza (one <message/>, <presence/> or <iq/>) on the current
// connection, waiting for one until ctx ends. A missing 'from' is set to
// the component's JID. At-most-once: a stanza queued just before the
// connection breaks is not re-sent.
func (p *Processor) Send(ctx context.Context, stanza string) error {
	b, err := p.prepare([]byte(stanza))
	if err != nil {
		return err
	}
	pc, err := p.current(ctx)
	if err != nil {
		return err
	}
	pc.write(b)
	return nil
}

func (p *Processor) prepare(raw []byte) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if err := xmppc.CheckElement(raw); err != nil {
		return nil, fmt.Errorf("processor: send: %w", err)
	}
	el, err := wire.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("processor: send: %w", err)
	}
	switch el.Name.Local {
	case "message", "presence", "iq":
	default:
		return nil, fmt.Errorf("processor: send: <%s/> is not a stanza", el.Name.Local)
	}
	if el.Get("to") == "" {
		return nil, errors.New("processor: send: the stanza has no 'to'")
	}
	if el.Get("from") == "" {
		raw = wire.Stamp(raw, p.cfg.JID, "")
	}
	return raw, nil
}

// Message sends a chat-less <message/> with a body to the JID to.
func (p *Processor) Message(ctx context.Context, to, body string) error {
	b := []byte("<message")
	b = wire.AppendAttr(b, "from", p.cfg.JID)
	b = wire.AppendAttr(b, "to", to)
	b = wire.AppendAttr(b, "id", xmppc.RandomID())
	b = append(b, "><body>"...)
	b = wire.AppendText(b, body)
	b = append(b, "</body></message>"...)
	return p.Send(ctx, string(b))
}

// IQ sends an IQ set with payload (one element) to the JID to (a user's
// full JID: IQs to a bare JID are answered by the server) and waits for
// the reply. It returns the result's child element (nil when empty), a
// *StanzaError for an error reply, or ErrConnectionLost.
func (p *Processor) IQ(ctx context.Context, to string, payload []byte) ([]byte, error) {
	if err := xmppc.CheckElement(payload); err != nil {
		return nil, fmt.Errorf("processor: iq payload: %w", err)
	}
	id := xmppc.RandomID()
	b := []byte("<iq type='set'")
	b = wire.AppendAttr(b, "from", p.cfg.JID)
	b = wire.AppendAttr(b, "to", to)
	b = wire.AppendAttr(b, "id", id)
	b = append(b, '>')
	b = append(b, bytes.TrimSpace(payload)...)
	b = append(b, "</iq>"...)
	pc, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	ch := make(chan *wire.Element, 1)
	pc.mu.Lock()
	pc.iqs[id] = ch
	pc.mu.Unlock()
	defer func() {
		pc.mu.Lock()
		delete(pc.iqs, id)
		pc.mu.Unlock()
	}()
	pc.write(b)
	select {
	case el := <-ch:
		if el.Get("type") == "error" {
			return nil, xmppc.ParseStanzaError(el.Raw)
		}
		kids, err := xmppc.Children(el.Raw)
		if err != nil || len(kids) == 0 {
			return nil, err
		}
		return kids[0].Raw, nil
	case <-pc.ctx.Done():
		return nil, ErrConnectionLost
	case <-ctx.Done():
		return nil, fmt.Errorf("processor: iq %s to %s: %w", id, to, ctx.Err())
	}
}
