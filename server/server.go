package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mrand "math/rand/v2"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/connlimit"
	"xcollect.dev/xcollect/storage"
)

// Queuer is the component side as the router sees it: the durable
// store-and-forward queue of every configured component. Implemented by
// component.Manager.
type Queuer interface {
	// IsComponent reports whether domain is a configured component.
	IsComponent(domain string) bool
	// Submit hands a stanza for a component to the durable queue. done is
	// called exactly once, from any goroutine: after the commit with Queued
	// or Duplicate, with Full when a queue limit is reached, or with a
	// non-nil error when the item could not be made durable. done may run
	// before Submit returns, on the caller's goroutine (unknown component,
	// full backlog, shutdown): do not call Submit holding a lock that done
	// takes.
	Submit(item storage.QueueItem, done func(storage.EnqueueResult, error))
	// PresenceComponents returns the components that receive the presence
	// changes of users of domain.
	PresenceComponents(domain string) []string
	// Components returns the configured component JIDs (for disco#items).
	Components() []string
}

// Server is one node's c2s side and router. Create it with New, start it
// with Start, stop it with Shutdown. It is safe for concurrent use.
type Server struct {
	cfg     Config
	log     zerolog.Logger
	store   storage.Store
	domains map[string]bool

	queue   Queuer  // nil until SetQueuer
	cluster Cluster // nil on a single node

	sessions   sessionTable
	writers    sync.Pool // *bufio.Writer borrowed by session writers per burst
	smDetached detachedTable
	moves      takeovers
	standbys   standbyOwner // copying this node's sessions to a standby (cluster)
	replicas   replicaTable // copies of other nodes' sessions (cluster)
	iqs        iqTable      // the IQs the server answers itself
	authGuard  authGuard
	connLimit  *connlimit.Limiter
	refusing   atomic.Int32 // connections being refused (stream error being written)
	stats      Stats
	// offlineMu serialises offline delivery per account (striped by bare
	// JID): two sessions logging in at once must not both fetch the same
	// messages before the first one deleted them.
	offlineMu [32]sync.Mutex

	// ctx bounds store calls and lives until Shutdown has drained the
	// sessions (so their unacked stanzas still reach offline storage);
	// loops ends the background loops when Shutdown starts.
	ctx       context.Context
	cancel    context.CancelFunc
	loops     context.Context
	stopLoops context.CancelFunc
	wg        sync.WaitGroup
	mu        sync.Mutex // guards closed, listeners
	closed    bool
	lns       []net.Listener
	addrs     map[string]net.Addr
	conns     map[net.Conn]struct{} // every accepted connection, closed at shutdown
}

// Stats are counters of a running server, read with atomic loads.
type Stats struct {
	Sessions     atomic.Int64
	StanzasIn    atomic.Int64
	StanzasOut   atomic.Int64
	AuthFailures atomic.Int64
	StreamErrors atomic.Int64
	logins       [len(loginMechanisms)][2]atomic.Int64 // [mechanism][failed, succeeded]: Logins()
	conditions   conditionCounts                       // stream errors by condition: StreamErrorsByCondition()
}

// New returns a server for cfg on store. It does not listen yet.
func New(cfg Config, store storage.Store) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		store:   store,
		domains: make(map[string]bool),
		addrs:   make(map[string]net.Addr),
		conns:   make(map[net.Conn]struct{}),
	}
	for _, d := range cfg.Domains {
		s.domains[d] = true
	}
	s.sessions.init()
	s.writers.New = func() any { return bufio.NewWriterSize(nil, 8192) }
	s.smDetached.init(2 * cfg.SMResumeTimeout)
	s.replicas.byID = make(map[string]*replica)
	s.replicas.epochs = make(map[string]int64)
	s.standbys.epoch = mrand.Int64() // not a clock: a restarted node only needs a different one
	s.standbys.kick = make(chan struct{}, 1)
	s.iqs = s.iqServices()
	s.authGuard.init(cfg.Auth)
	s.connLimit = connlimit.New(cfg.MaxConns, cfg.MaxConnsPerAddr)
	if len(cfg.AuthSecret) == 0 {
		s.cfg.AuthSecret = make([]byte, 32)
		_, _ = rand.Read(s.cfg.AuthSecret) // crypto/rand.Read never fails (Go 1.24+)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.loops, s.stopLoops = context.WithCancel(s.ctx)
	return s, nil
}

// SetQueuer connects the component queue. Call before Start.
func (s *Server) SetQueuer(q Queuer) { s.queue = q }

// SetCluster connects the cluster. Call before Start.
func (s *Server) SetCluster(c Cluster) { s.cluster = c }

// Stats returns the server's live counters.
func (s *Server) Stats() *Stats { return &s.stats }

// IsLocalDomain reports whether domain is one of the served virtual hosts.
func (s *Server) IsLocalDomain(domain string) bool { return s.domains[domain] }

// Domains returns the served virtual hosts.
func (s *Server) Domains() []string { return append([]string(nil), s.cfg.Domains...) }

// spawn runs fn in a goroutine counted in s.wg; it refuses after Shutdown
// began and reports whether fn was started.
func (s *Server) spawn(fn func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return true
}

// offload runs fn on a server goroutine, off the caller's (a cluster link
// reader, a commit callback), or inline once Shutdown began: work that
// stores stanzas must not be dropped.
func (s *Server) offload(fn func()) {
	if !s.spawn(fn) {
		fn()
	}
}

// Start opens the listeners and the background loops.
func (s *Server) Start() error {
	if s.cfg.C2SAddr != "" {
		if err := s.listen("c2s", s.cfg.C2SAddr, false); err != nil {
			return err
		}
	}
	if s.cfg.C2STLSAddr != "" {
		if err := s.listen("c2s_tls", s.cfg.C2STLSAddr, true); err != nil {
			s.closeListeners()
			return err
		}
	}
	s.spawn(s.offlineExpiryLoop)
	s.spawn(s.authGuard.pruneLoop(s.loops))
	if s.cluster != nil && s.cfg.SMResumeTimeout > 0 {
		s.spawn(s.replicaLoop)
	}
	return nil
}

// Addr returns the bound address of listener name ("c2s" or "c2s_tls"), or
// nil.
func (s *Server) Addr(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrs[name]
}

// Shutdown closes the listeners, ends every session with system-shutdown and
// waits for all goroutines, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.closeListeners()
	s.stopLoops()
	// s.ctx stays alive until the sessions are gone: ending them stores
	// their unacked stanzas offline.
	defer s.cancel()
	for _, sess := range s.sessions.all() {
		sess.closeWithError(closeShutdown, "system-shutdown", "")
	}
	for _, sess := range s.smDetached.list() {
		s.endSession(sess)
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	// Sessions get a moment to write their system-shutdown error; then
	// every connection still open (negotiating ones too) is closed.
	grace := time.NewTimer(time.Second)
	defer grace.Stop()
	select {
	case <-done:
		return nil
	case <-grace.C:
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("server: shutdown: %w", ctx.Err())
	}
}

// registerConn registers an accepted connection until done is called.
func (s *Server) registerConn(c net.Conn) (done func()) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	lns := s.lns
	s.lns = nil
	s.mu.Unlock()
	for _, ln := range lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Warn().Err(err).Msg("close listener")
		}
	}
}

func (s *Server) offlineExpiryLoop() {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		n, err := s.store.Offline().ExpireOffline(s.loops, time.Now().Add(-s.cfg.OfflineExpiry))
		if err != nil && s.loops.Err() == nil {
			s.log.Warn().Err(err).Msg("expire offline messages")
		} else if n > 0 {
			s.log.Info().Int("count", n).Msg("expired offline messages")
		}
		select {
		case <-s.loops.Done():
			return
		case <-t.C:
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
