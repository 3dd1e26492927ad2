package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/rs/zerolog"
)

// Cluster is this node's membership in the xcollect cluster: memberlist,
// the session directory and the node-to-node links. Create it with New,
// then Start; all methods are safe for concurrent use.
type Cluster struct {
	cfg   Config
	h     Handlers
	log   zerolog.Logger
	epoch int64 // start time, Unix nanoseconds
	dir   *directory
	// joined: a join reached a seed (or there are no seeds to join).
	joined atomic.Bool
	clock  atomic.Uint64 // hybrid logical clock for versions

	localMu   sync.Mutex // lock order: localMu, then mu, then link.mu
	local     map[string]Session
	localHash uint64
	localMax  uint64 // newest version issued (tombstones too)

	loadMu   sync.Mutex
	load     Load
	meta     NodeMeta // Link filled in by Start
	metaKick chan struct{}

	memMu      sync.RWMutex
	members    map[string]memberlist.Node // alive members, copied in callbacks
	memChanged chan struct{}              // closed and replaced on every change

	mu      sync.RWMutex
	closing bool
	started bool
	links   map[string]*link
	dialers map[string]context.CancelFunc
	ml      *memberlist.Memberlist
	ln      net.Listener
	// dialFrom is the local address links are dialed from: the link
	// listener's host, unless it listens on all interfaces (nil).
	dialFrom *net.TCPAddr

	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
	work   workQueue
	mlLog  *mlLogWriter
	// linkTLS secures the node links; nil without a secret key.
	linkTLS *linkTLS

	// Owned by the events goroutine.
	pending map[string]pendingCheck
	lastReq map[string]time.Time

	// Test hooks.
	dropDeltas  atomic.Bool            // drop outgoing deltas (simulates loss)
	hideMember  atomic.Pointer[string] // ignore this member's joins (simulates the join race)
	repairGrace time.Duration          // wait for in-flight deltas before a snapshot request
}

// New validates cfg and builds a Cluster. It opens no socket.
func New(cfg Config, h Handlers) (*Cluster, error) {
	if !h.complete() {
		return nil, errors.New("cluster: Handlers.Stanzas, Directory and Control are all required")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	now := time.Now().UnixNano()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{
		cfg:         cfg,
		h:           h,
		log:         cfg.Logger, // names the node already (one "node" key per line)
		epoch:       now,
		dir:         newDirectory(),
		local:       map[string]Session{},
		localMax:    uint64(now),
		meta:        cfg.Meta,
		metaKick:    make(chan struct{}, 1),
		members:     map[string]memberlist.Node{},
		memChanged:  make(chan struct{}),
		links:       map[string]*link{},
		dialers:     map[string]context.CancelFunc{},
		ctx:         ctx,
		cancel:      cancel,
		pending:     map[string]pendingCheck{},
		lastReq:     map[string]time.Time{},
		repairGrace: cfg.repairGrace,
	}
	if len(cfg.SecretKey) > 0 {
		if c.linkTLS, err = newLinkTLS(cfg.SecretKey); err != nil {
			cancel()
			return nil, err
		}
	}
	c.clock.Store(uint64(now))
	c.mlLog = &mlLogWriter{log: c.log.With().Str("component", "memberlist").Logger()}
	c.work.signal = make(chan struct{}, 1)
	return c, nil
}

// Name returns this node's member name.
func (c *Cluster) Name() string { return c.cfg.NodeName }

// spawn starts fn in a goroutine counted in c.wg; it refuses (returns false)
// once Shutdown has begun.
func (c *Cluster) spawn(name string, fn func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		c.log.Debug().Str("goroutine", name).Msg("not started: shutting down")
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
	return true
}

// Start opens the link listener, creates memberlist and joins the seeds.
// If no seed answers, it keeps retrying in the background with backoff.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.started || c.closing {
		c.mu.Unlock()
		return errors.New("cluster: Start called twice or after Shutdown")
	}
	c.started = true
	c.mu.Unlock()

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", c.cfg.LinkAddr)
	if err != nil {
		return fmt.Errorf("cluster: link listener %s: %w", c.cfg.LinkAddr, err)
	}
	c.loadMu.Lock()
	if c.meta.Link == "" {
		c.meta.Link = ln.Addr().String()
	}
	c.loadMu.Unlock()
	if len(c.cfg.SecretKey) == 0 {
		c.log.Warn().Bool("insecure", true).Msg("INSECURE CLUSTER, FOR TESTS ONLY: no secret key: gossip and node links are neither authenticated nor encrypted; anyone who reaches them can join and inject stanzas")
	}
	var dialFrom *net.TCPAddr
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsUnspecified() {
		dialFrom = &net.TCPAddr{IP: ta.IP}
	}

	mc := c.cfg.memberlistConfig(&delegate{c: c}, &events{c: c}, &merger{c: c}, c.mlLog)
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = ln.Close() // the create error is the one to report
		return fmt.Errorf("cluster: create memberlist on %s:%d: %w", c.cfg.BindAddr, c.cfg.BindPort, err)
	}
	c.mu.Lock()
	c.ml, c.ln, c.dialFrom = ml, ln, dialFrom
	c.mu.Unlock()
	c.log.Info().Str("gossip", fmt.Sprintf("%s:%d", mc.BindAddr, mc.BindPort)).
		Str("link", ln.Addr().String()).Msg("cluster listening")

	c.spawn("link-accept", c.acceptLoop)
	c.spawn("events", c.eventLoop)
	c.spawn("meta", c.metaLoop)

	if len(c.cfg.Join) > 0 || c.cfg.JoinDNS != "" {
		if err := c.join(ctx); err != nil {
			// Normal while the seeds are still starting (a cluster starts
			// its nodes together): info now, a warning only if it lasts.
			c.log.Info().Err(err).Msg("no seed reachable yet; retrying in the background")
			c.spawn("join-retry", c.joinRetry)
		}
	}
	return nil
}

// join resolves the seeds (bounded by ctx) and joins them.
func (c *Cluster) join(ctx context.Context) error {
	seeds, err := c.cfg.seedAddrs(ctx)
	if len(seeds) == 0 {
		if err == nil {
			err = errors.New("no seed addresses")
		}
		return err
	}
	n, jerr := c.ml.Join(seeds)
	if n == 0 {
		return fmt.Errorf("cluster: join %v: %w", seeds, errors.Join(err, jerr))
	}
	c.joined.Store(true)
	c.log.Info().Int("contacted", n).Msg("joined cluster")
	return nil
}

// joinWarnAfter is how long the join may keep failing before it is worth
// a warning.
const joinWarnAfter = 30 * time.Second

// Joined reports whether this node has joined its cluster: a join reached
// a seed, or it has no seeds (it is the first node). Readiness waits for it.
func (c *Cluster) Joined() bool {
	return c.joined.Load() || (len(c.cfg.Join) == 0 && c.cfg.JoinDNS == "")
}

func (c *Cluster) joinRetry() {
	backoff := time.Second
	start, warned := time.Now(), false
	for {
		t := time.NewTimer(backoff)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		err := c.join(c.ctx)
		switch {
		case err == nil:
			return
		case !warned && time.Since(start) >= joinWarnAfter:
			warned = true
			c.log.Warn().Err(err).Dur("for", time.Since(start).Round(time.Second)).Msg("still no seed reachable; retrying in the background")
		default:
			c.log.Debug().Err(err).Dur("backoff", backoff).Msg("join retry failed")
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// Shutdown leaves the cluster gracefully, closes links and waits for every
// goroutine, or until ctx ends.
func (c *Cluster) Shutdown(ctx context.Context) error {
	return c.stop(ctx, true)
}

// stop tears down; leave=false simulates a crash (no Leave message).
func (c *Cluster) stop(ctx context.Context, leave bool) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	ml, ln := c.ml, c.ln
	links := make([]*link, 0, len(c.links))
	for _, l := range c.links {
		links = append(links, l)
	}
	c.mu.Unlock()

	var errs []error
	if ml != nil {
		if leave {
			timeout := time.Second
			if dl, ok := ctx.Deadline(); ok {
				timeout = min(timeout, time.Until(dl))
			}
			if err := ml.Leave(timeout); err != nil {
				// Peers will find us dead instead; not a shutdown failure.
				c.log.Warn().Err(err).Msg("leave broadcast not confirmed")
			}
		}
		if err := ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: memberlist shutdown: %w", err))
		}
	}
	c.cancel()
	if ln != nil {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("cluster: close link listener: %w", err))
		}
	}
	for _, l := range links {
		l.close()
	}
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("cluster: waiting for goroutines: %w", ctx.Err()))
	}
	c.mlLog.detach()
	c.log.Info().Bool("left", leave).Msg("cluster stopped")
	return errors.Join(errs...)
}
