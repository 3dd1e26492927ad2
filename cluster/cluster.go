package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/rs/zerolog"
)

// Handler receives what the cluster learns. It is implemented by the server.
// Calls come from cluster goroutines (one per link, one for membership
// events) and must not block for long; they are never made with a cluster
// lock held, so they may call back into the Cluster.
type Handler interface {
	// HandleStanza delivers a stanza another node routed here for a local
	// target (full or bare JID). The slice is owned by the handler.
	HandleStanza(to string, stanza []byte)
	// HandleSessionsGone reports remote entries removed because their node
	// died or left, or because a tombstone arrived.
	HandleSessionsGone(gone []Session)
	// HandleSessionUpdate reports a remote entry that appeared or changed.
	HandleSessionUpdate(s Session)
	// HandleConflict asks the server to close the local session fullJID
	// with <conflict/>: another node bound the same full JID later. The
	// cluster has already dropped the local entry (no tombstone: the
	// newer entry replaces it everywhere).
	HandleConflict(fullJID string)
	// HandleUndelivered returns a stanza that Route accepted but that was
	// still queued when its link died; the server falls back to offline
	// storage or a stanza error.
	HandleUndelivered(to string, stanza []byte)
	// HandleStanzaAcked is HandleStanza for a stanza sent with RouteAcked:
	// the handler calls ack (from any goroutine, once) when the stanza is
	// delivered to a local session or stored, and may not call it at all
	// when it is neither. Must not block.
	HandleStanzaAcked(to string, stanza []byte, ack func())
}

// Cluster is this node's membership in the xcollect cluster: memberlist,
// the session directory and the node-to-node links. Create it with New,
// then Start; all methods are safe for concurrent use.
type Cluster struct {
	cfg   Config
	h     Handler
	log   zerolog.Logger
	epoch int64 // start time, Unix nanoseconds
	dir   *directory
	clock atomic.Uint64 // hybrid logical clock for versions

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
func New(cfg Config, h Handler) (*Cluster, error) {
	if h == nil {
		return nil, errors.New("cluster: nil handler")
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
		log:         cfg.Logger.With().Str("node", cfg.NodeName).Logger(),
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
			c.log.Warn().Err(err).Msg("no seed reachable; retrying in the background")
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
	c.log.Info().Int("contacted", n).Msg("joined cluster")
	return nil
}

func (c *Cluster) joinRetry() {
	backoff := time.Second
	for {
		t := time.NewTimer(backoff)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := c.join(c.ctx); err == nil {
			return
		} else {
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

// nextVersion returns a new version: wall-clock nanoseconds, but always
// above every version issued or observed before.
func (c *Cluster) nextVersion() uint64 {
	now := uint64(time.Now().UnixNano())
	for {
		cur := c.clock.Load()
		n := max(cur+1, now)
		if c.clock.CompareAndSwap(cur, n) {
			return n
		}
	}
}

// observe moves the clock past a version seen from another node.
func (c *Cluster) observe(v uint64) {
	for {
		cur := c.clock.Load()
		if v <= cur || c.clock.CompareAndSwap(cur, v) {
			return
		}
	}
}

// UpsertLocal records a local session that was bound or changed presence and
// sends the delta to every peer. It sets s.Node and s.Version. It never
// blocks on the network.
func (c *Cluster) UpsertLocal(s Session) {
	s.Node = c.cfg.NodeName
	s.Deleted = false
	c.localMu.Lock()
	defer c.localMu.Unlock()
	s.Version = c.nextVersion()
	if old, ok := c.local[s.JID]; ok {
		c.localHash ^= entryHash(old.JID, old.Version)
	}
	c.local[s.JID] = s
	c.localHash ^= entryHash(s.JID, s.Version)
	c.localMax = s.Version
	c.sendDelta(s)
}

// RemoveLocal removes a local session and sends a tombstone to every peer.
func (c *Cluster) RemoveLocal(fullJID string) {
	c.localMu.Lock()
	defer c.localMu.Unlock()
	if !c.dropLocalLocked(fullJID) {
		return
	}
	t := Session{JID: fullJID, Node: c.cfg.NodeName, Version: c.nextVersion(), Deleted: true}
	c.localMax = t.Version
	c.sendDelta(t)
}

// ForgetLocal drops a local entry that a newer entry of another node
// replaced (a conflict: the session moved or was bound again there)
// without sending a tombstone: a tombstone could reach a third node before
// the newer entry and leave it, for a moment, with no session at all.
// Lookups prefer the newer entry meanwhile, and the next digest exchange
// removes the old one everywhere (its owner's snapshot lacks it).
func (c *Cluster) ForgetLocal(fullJID string) {
	c.localMu.Lock()
	defer c.localMu.Unlock()
	c.dropLocalLocked(fullJID)
}

// dropLocalLocked removes a local entry from the table and its digest; it
// reports whether there was one. Called with localMu held.
func (c *Cluster) dropLocalLocked(fullJID string) bool {
	old, ok := c.local[fullJID]
	if !ok {
		return false
	}
	delete(c.local, fullJID)
	c.localHash ^= entryHash(old.JID, old.Version)
	return true
}

// sendDelta queues s on every link; called with localMu held so that deltas
// and snapshots are ordered. A full queue makes the link resend a snapshot.
func (c *Cluster) sendDelta(s Session) {
	if c.dropDeltas.Load() {
		return
	}
	body := binary.AppendUvarint(make([]byte, 0, 64+len(s.JID)+len(s.Status)), 1)
	body = appendSession(body, s)
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, l := range c.links {
		if err := l.enqueue(outFrame{typ: frameDelta, body: body}); errors.Is(err, ErrQueueFull) {
			l.requestResync()
		}
	}
}

// snapshotFrame encodes our own sessions: uvarint clock (every version up to
// it is covered), uvarint newest issued version, uvarint count, entries.
func (c *Cluster) snapshotFrame() []byte {
	c.localMu.Lock()
	defer c.localMu.Unlock()
	b := make([]byte, 0, 32+len(c.local)*48)
	b = binary.AppendUvarint(b, c.clock.Load())
	b = binary.AppendUvarint(b, c.localMax)
	b = binary.AppendUvarint(b, uint64(len(c.local)))
	for _, s := range c.local {
		b = appendSession(b, s)
	}
	return b
}

// Lookup returns the live remote sessions of a bare JID (local sessions
// are not included).
func (c *Cluster) Lookup(bare string) []Session { return c.dir.lookup(bare) }

// LookupFull returns the live remote session of a full JID.
func (c *Cluster) LookupFull(full string) (Session, bool) { return c.dir.lookupFull(full) }

// DirectorySize returns the number of live sessions this node knows of,
// its own included.
func (c *Cluster) DirectorySize() int {
	c.localMu.Lock()
	n := len(c.local)
	c.localMu.Unlock()
	return n + c.dir.size()
}

// Route queues stanza for the node that holds target to. It never blocks:
// it returns ErrUnknownNode, ErrLinkDown or ErrQueueFull (wrapped) when the
// stanza cannot be queued. A nil return means the stanza is sent or, if
// the link dies first, handed back through Handler.HandleUndelivered.
// Route copies stanza.
func (c *Cluster) Route(node, to string, stanza []byte) error {
	l, err := c.linkFor(node, to)
	if err != nil {
		return err
	}
	if err := l.enqueue(outFrame{typ: frameStanza, to: to, body: bytes.Clone(stanza)}); err != nil {
		return fmt.Errorf("cluster: route %s to %s: %w", to, node, err)
	}
	return nil
}

// linkFor returns the link to node for a stanza to to.
func (c *Cluster) linkFor(node, to string) (*link, error) {
	if node == c.cfg.NodeName {
		return nil, fmt.Errorf("cluster: route %s to self: %w", to, ErrUnknownNode)
	}
	c.mu.RLock()
	l := c.links[node]
	closing := c.closing
	c.mu.RUnlock()
	if closing {
		return nil, fmt.Errorf("cluster: route %s: %w", to, ErrClosed)
	}
	if l == nil {
		if c.isAlive(node) {
			return nil, fmt.Errorf("cluster: route %s to %s: %w", to, node, ErrLinkDown)
		}
		return nil, fmt.Errorf("cluster: route %s to %s: %w", to, node, ErrUnknownNode)
	}
	return l, nil
}

// RouteAcked is Route with a receipt: done(nil) runs once the peer node
// delivered the stanza to a local session or stored it, done(err) when the
// link died first (the stanza may or may not have arrived: the caller falls
// back, at-least-once). done runs on a cluster goroutine and must not
// block. When RouteAcked returns an error, done is never called.
func (c *Cluster) RouteAcked(node, to string, stanza []byte, done func(error)) error {
	l, err := c.linkFor(node, to)
	if err != nil {
		return err
	}
	if err := l.enqueueAcked(to, bytes.Clone(stanza), done); err != nil {
		return fmt.Errorf("cluster: route %s to %s: %w", to, node, err)
	}
	return nil
}

// LinkUp reports whether node is an alive member with an open link to
// this node: stanzas routed to it now are likely to arrive.
func (c *Cluster) LinkUp(node string) bool {
	c.mu.RLock()
	l := c.links[node]
	c.mu.RUnlock()
	return l != nil && !l.isClosed() && c.isAlive(node)
}

func (c *Cluster) memberlist() *memberlist.Memberlist {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ml
}

func (c *Cluster) isAlive(node string) bool {
	_, ok := c.member(node)
	return ok
}

// SetLoad records this node's load; metadata is re-advertised at most every
// 500 ms. It never blocks.
func (c *Cluster) SetLoad(l Load) {
	c.loadMu.Lock()
	c.load = l
	c.loadMu.Unlock()
	select {
	case c.metaKick <- struct{}{}:
	default:
	}
}

func (c *Cluster) metaLoop() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.metaKick:
		}
		if err := c.ml.UpdateNode(time.Second); err != nil {
			c.log.Debug().Err(err).Msg("update node metadata")
		}
		t := time.NewTimer(metaUpdateEvery)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// metaBytes encodes the current metadata and load.
func (c *Cluster) metaBytes() []byte {
	c.loadMu.Lock()
	defer c.loadMu.Unlock()
	return encodeMeta(c.meta, c.load, c.epoch)
}

// Nodes returns all alive members, this node included, sorted by name.
func (c *Cluster) Nodes() []Node {
	members := c.memberList()
	out := make([]Node, 0, len(members))
	for _, m := range members {
		if m.Name == c.cfg.NodeName {
			c.loadMu.Lock()
			out = append(out, Node{NodeMeta: c.meta, Load: c.load, Alive: true})
			c.loadMu.Unlock()
			continue
		}
		meta, load, _, err := decodeMeta(m.Meta)
		if err != nil {
			c.log.Debug().Err(err).Str("peer", m.Name).Msg("skip member with bad metadata")
			continue
		}
		meta.Name = m.Name
		out = append(out, Node{NodeMeta: meta, Load: load, Alive: true})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func leastLoaded(nodes []Node, skip string) (Node, bool) {
	var best Node
	found := false
	for _, n := range nodes {
		if n.Name == skip {
			continue
		}
		if !found || n.Load.Score() < best.Load.Score() {
			best, found = n, true
		}
	}
	return best, found
}

// LeastLoaded returns the alive node with the lowest Load.Score (ties: the
// lowest name).
func (c *Cluster) LeastLoaded() (Node, bool) { return leastLoaded(c.Nodes(), "") }

// ShouldSteer reports whether a new stream should be sent elsewhere: this
// node has at least s.MinSessions sessions, they exceed the cluster
// average by more than s.Margin (0.2 = 20 %), and a node with a lower
// score and fewer sessions exists. It returns that node.
func (c *Cluster) ShouldSteer(s Steering) (Node, bool) {
	if s.MinSessions <= 0 {
		s.MinSessions = DefaultSteerMinSessions
	}
	nodes := c.Nodes()
	if len(nodes) < 2 {
		return Node{}, false
	}
	var self Node
	total := 0
	for _, n := range nodes {
		total += n.Load.Sessions
		if n.Name == c.cfg.NodeName {
			self = n
		}
	}
	if self.Load.Sessions < s.MinSessions {
		return Node{}, false
	}
	avg := float64(total) / float64(len(nodes))
	if float64(self.Load.Sessions) <= avg*(1+s.Margin) {
		return Node{}, false
	}
	t, ok := leastLoaded(nodes, c.cfg.NodeName)
	if !ok || t.Load.Sessions >= self.Load.Sessions || t.Load.Score() >= self.Load.Score() {
		return Node{}, false
	}
	return t, true
}
