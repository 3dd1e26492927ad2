package component

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/connlimit"
	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/storage"
)

// Router takes the stanzas that connected components send.
// *server.Server satisfies it. RouteFromComponent must not block on the
// network.
type Router interface {
	RouteFromComponent(component string, el *wire.Element)
}

// Manager is the component side of one node: it implements server.Queuer
// (Submit and friends) and serves XEP-0114 connections. Create it with New,
// start it with Start, stop it with Shutdown. It is safe for concurrent use.
type Manager struct {
	cfg      Config
	log      zerolog.Logger
	store    storage.Store
	router   Router
	node     string
	specs    map[string]*Spec // by JID; read-only after New
	names    []string         // sorted component JIDs
	presence []string         // components with ReceivePresence

	limit   *connlimit.Limiter // live connections per address and in total
	penalty *connlimit.Penalty // failed handshakes per address
	// compPenalty counts failed handshakes per component (from any
	// address); handshaking holds a component in penalty to a few
	// handshakes at once; failLog thins the warn lines of a guessing storm.
	compPenalty *connlimit.Penalty
	handshaking connlimit.Concurrent
	failLog     connlimit.Sampler
	refusing    atomic.Int32 // connections being refused

	ctx    context.Context // cancelled when Shutdown begins
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex // guards everything below
	started bool
	closed  bool
	ln      net.Listener // nil when Config.Addr is ""
	tlsLn   net.Listener // nil when Config.TLSAddr is ""
	conns   map[*conn]struct{}
	online  map[string]map[*conn]struct{} // component → live authenticated connections

	c committer
}

// New returns a manager for cfg on store; stanzas from components go to
// router, and node names this node in lease owner ids. It does not listen
// yet.
func New(cfg Config, store storage.Store, router Router, node string) (*Manager, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil || router == nil {
		return nil, errors.New("component: New needs a store and a router")
	}
	if node == "" {
		node = "node"
	}
	m := &Manager{
		cfg:    cfg,
		log:    cfg.Logger,
		store:  store,
		router: router,
		node:   node,
		specs:  make(map[string]*Spec, len(cfg.Components)),
		conns:  make(map[*conn]struct{}),
		online: make(map[string]map[*conn]struct{}),
		limit:  connlimit.New(cfg.MaxConns, cfg.MaxConnsPerAddr),
		penalty: &connlimit.Penalty{Free: cfg.HandshakeFreeFailures, Window: 5 * time.Minute,
			Max: cfg.HandshakeMaxDelay, MaxEntries: 100000},
		compPenalty: &connlimit.Penalty{Free: cfg.HandshakeComponentFreeFailures, Window: 5 * time.Minute,
			Max: cfg.HandshakeMaxDelay},
		failLog: connlimit.Sampler{Interval: 10 * time.Second, MaxEntries: 10000},
	}
	for i := range cfg.Components {
		sp := &cfg.Components[i]
		m.specs[sp.JID] = sp
		m.names = append(m.names, sp.JID)
		if sp.ReceivePresence {
			m.presence = append(m.presence, sp.JID)
		}
	}
	sort.Strings(m.names)
	sort.Strings(m.presence)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.c.init(m)
	return m, nil
}

// IsComponent reports whether domain is a configured component.
func (m *Manager) IsComponent(domain string) bool { return m.specs[domain] != nil }

// Components returns the configured component JIDs, sorted.
func (m *Manager) Components() []string { return append([]string(nil), m.names...) }

// PresenceComponents returns the components that receive presence changes
// of users of domain: those with ReceivePresence that belong to domain's
// tenant, i.e. whose JID is a subdomain of domain (collector.example.com
// for example.com). A domain is a tenant: another domain's processors never
// see its users' presence.
func (m *Manager) PresenceComponents(domain string) []string {
	var out []string
	for _, c := range m.presence {
		if strings.HasSuffix(c, "."+domain) {
			out = append(out, c)
		}
	}
	return out
}

// Submit hands item to the committer. done is called exactly once: after
// the commit with the store's result, at once with ErrBacklogFull when too
// many items wait, or with ErrShutdown. Submit never blocks and may be
// called from done callbacks.
func (m *Manager) Submit(item storage.QueueItem, done func(storage.EnqueueResult, error)) {
	if done == nil {
		done = func(storage.EnqueueResult, error) {}
	}
	if m.specs[item.Component] == nil {
		done(0, fmt.Errorf("%w: %s", ErrUnknownComponent, item.Component))
		return
	}
	m.c.submit(item, done)
}

// domainOf returns the server domain that pings component: Config.Domain,
// else the component's JID without its first label.
func (m *Manager) domainOf(component string) string {
	if m.cfg.Domain != "" {
		return m.cfg.Domain
	}
	if _, parent, ok := strings.Cut(component, "."); ok && parent != "" {
		return parent
	}
	return component
}

// limits returns component's queue limits for Enqueue.
func (m *Manager) limits(component string) storage.QueueLimits {
	sp := m.specs[component]
	if sp == nil {
		return storage.QueueLimits{}
	}
	return storage.QueueLimits{MaxRows: sp.MaxRows, MaxBytes: sp.MaxBytes, DedupeWindow: sp.DedupeWindow}
}

// spawn runs fn in a goroutine counted in m.wg; it refuses after Shutdown
// began and reports whether fn was started.
func (m *Manager) spawn(fn func()) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		fn()
	}()
	return true
}

// Start opens the component listener and starts the committer and the
// expiry loop.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.started || m.closed {
		m.mu.Unlock()
		return errors.New("component: Start called twice or after Shutdown")
	}
	m.started = true
	m.mu.Unlock()
	// What this node's previous run held is free now: release it instead
	// of waiting for its leases to expire (a restart after a crash).
	for _, name := range m.names {
		rctx, cancel := context.WithTimeout(ctx, storeCallTimeout)
		err := m.store.Queue().ReleasePrefix(rctx, name, m.node+"/")
		cancel()
		if err != nil {
			m.log.Warn().Err(err).Str("component", name).Msg("release the previous run's leases; they expire on their own")
		}
	}
	var lc net.ListenConfig
	var ln, tlsLn net.Listener
	if m.cfg.Addr != "" {
		var err error
		if ln, err = lc.Listen(ctx, "tcp", m.cfg.Addr); err != nil {
			return fmt.Errorf("component: listen on %s: %w", m.cfg.Addr, err)
		}
		m.log.Info().Str("listener", "component").Str("addr", ln.Addr().String()).Strs("components", m.names).Msg("listening")
	}
	if m.cfg.TLSAddr != "" {
		l, err := lc.Listen(ctx, "tcp", m.cfg.TLSAddr)
		if err != nil {
			if ln != nil {
				ln.Close()
			}
			return fmt.Errorf("component: listen on %s (component_tls): %w", m.cfg.TLSAddr, err)
		}
		// The handshake runs on the first read, under negotiate's deadline.
		tlsLn = tls.NewListener(l, m.cfg.TLS)
		m.log.Info().Str("listener", "component_tls").Str("addr", l.Addr().String()).Strs("components", m.names).Msg("listening")
	}
	m.mu.Lock()
	m.ln, m.tlsLn = ln, tlsLn
	m.mu.Unlock()
	m.spawn(m.c.run)
	m.spawn(m.expiryLoop)
	for _, l := range []net.Listener{ln, tlsLn} {
		if l != nil {
			m.spawn(func() { m.acceptLoop(l) })
		}
	}
	return nil
}

// TLSAddr returns the bound direct-TLS listener address, or nil.
func (m *Manager) TLSAddr() net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tlsLn == nil {
		return nil
	}
	return m.tlsLn.Addr()
}

// Addr returns the bound listener address, or nil before Start.
func (m *Manager) Addr() net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ln == nil {
		return nil
	}
	return m.ln.Addr()
}

// Shutdown closes the listener, ends every component connection with
// system-shutdown (their leases are released), flushes the committer and
// waits for every goroutine, or for ctx. Items the committer could not
// commit before ctx ended get ErrShutdown.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	lns := []net.Listener{m.ln, m.tlsLn}
	conns := make([]*conn, 0, len(m.conns))
	for c := range m.conns {
		conns = append(conns, c)
	}
	m.mu.Unlock()
	for _, ln := range lns {
		if ln == nil {
			continue
		}
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			m.log.Warn().Err(err).Msg("close component listener")
		}
	}
	m.cancel()
	for _, c := range conns {
		c.closeWithError(reasonShutdown, wire.SystemShutdown, "")
	}
	m.c.stop()
	done := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		m.c.abort()
		for _, c := range conns {
			c.nc.Close()
		}
		select {
		case <-done:
		case <-time.After(time.Second):
		}
		return fmt.Errorf("component: shutdown: %w", ctx.Err())
	}
}

// expiryLoop moves rows older than their component's MaxAge to the dead
// letters every ExpiryInterval.
func (m *Manager) expiryLoop() {
	t := time.NewTicker(m.cfg.ExpiryInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case now := <-t.C:
			m.penalty.Prune(now)
			m.compPenalty.Prune(now)
			m.failLog.Prune(now)
		}
		for _, name := range m.names {
			sp := m.specs[name]
			if sp.MaxAge <= 0 {
				continue
			}
			ctx, cancel := context.WithTimeout(m.ctx, time.Minute)
			n, err := m.store.Queue().Expire(ctx, name, time.Now().Add(-sp.MaxAge))
			cancel()
			switch {
			case err != nil && m.ctx.Err() == nil:
				m.log.Warn().Err(err).Str("component", name).Msg("expire queue rows")
			case n > 0:
				m.log.Info().Str("component", name).Int("count", n).Dur("max_age", sp.MaxAge).Msg("expired queue rows to dead letters")
			}
		}
	}
}

func randomID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // the OS RNG never fails on Linux
	}
	return hex.EncodeToString(b)
}
