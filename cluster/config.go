package cluster

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/rs/zerolog"
)

// Default ports and limits.
const (
	// DefaultBindPort is memberlist's TCP+UDP gossip port.
	DefaultBindPort = 7946
	// DefaultLinkPort is the node-to-node stanza link port; the link
	// listens on the bind address unless LinkAddr names another.
	DefaultLinkPort = 7947
	// DefaultLinkQueue is the number of frames a link buffers before Route
	// returns ErrQueueFull.
	DefaultLinkQueue = 8192
	// metaUpdateEvery bounds how often SetLoad re-advertises node metadata.
	metaUpdateEvery = 500 * time.Millisecond
	// resolveTimeout bounds one JoinDNS lookup.
	resolveTimeout = 5 * time.Second
)

// DefaultSteerMinSessions is the default load floor for steering: a node
// with fewer bound client sessions never sends a new client elsewhere.
// Most XMPP client libraries do not follow <see-other-host/>, so steering
// is for real overload only, not for evening out a lightly used cluster.
const DefaultSteerMinSessions = 5000

// Steering says when a node sends new streams to a lighter node.
type Steering struct {
	// Margin: steer when this node's sessions exceed the cluster average
	// by more than Margin (0.25 = 25 %).
	Margin float64
	// MinSessions: never steer while this node has fewer bound sessions
	// than this (an absolute floor on top of Margin). 0 means
	// DefaultSteerMinSessions; tests set a small value.
	MinSessions int
}

// Config configures a Cluster. The zero value of every field means its
// default; New never modifies the caller's struct.
type Config struct {
	// NodeName is the unique member name. Default: os.Hostname().
	NodeName string
	// BindAddr and BindPort are memberlist's listen address (TCP and UDP).
	// BindAddr defaults to AdvertiseAddr; with neither New fails: a node
	// never listens on all interfaces unless told to ("0.0.0.0"). BindPort
	// defaults to 7946; -1 is not allowed; use Local with BindPort 0 in
	// tests to get a free port (0 means "any" only when Local is set).
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what other members use to reach
	// memberlist. Default: derived by memberlist from BindAddr.
	AdvertiseAddr string
	AdvertisePort int
	// LinkAddr is the node-to-node link listener (host:port, port 0 picks
	// a free port). An empty host means BindAddr; empty means BindAddr
	// with port 7947 (port 0 when Local). Links to other nodes are dialed
	// from this host too, so that the acceptor can check the address.
	LinkAddr string
	// Join lists seed addresses (host:port) to join on Start.
	Join []string
	// JoinDNS is a DNS name whose A/AAAA records are seeds; the port is
	// BindPort.
	JoinDNS string
	// Resolver looks up JoinDNS. nil means net.DefaultResolver; tests set
	// one that talks to their own DNS server.
	Resolver *net.Resolver
	// SecretKey (16, 24 or 32 bytes) encrypts gossip (AES-GCM) and secures
	// the node links: they are TLS 1.3 with an Ed25519 certificate derived
	// from the key (HKDF-SHA256; the same on every node, pinned by both
	// sides, nothing to manage), then an HMAC-SHA256 challenge that names
	// the nodes. Every node needs the same key, made of random bytes (make
	// one with: head -c 32 /dev/urandom | base64); text, such as a typed
	// password, is refused (ErrWeakKey). Empty is refused (ErrNoKey)
	// unless Insecure is set.
	SecretKey []byte
	// Insecure allows a cluster without SecretKey, for tests only: gossip
	// is plain and links are plain TCP, neither authenticated nor
	// encrypted, so anyone who reaches the ports can join the membership
	// and then link. Start logs a warning. Ignored when SecretKey is set.
	Insecure bool
	// Label is memberlist's cluster label; members with another label are
	// ignored.
	Label string
	// Local selects memberlist.DefaultLocalConfig timings (loopback tests)
	// instead of DefaultLANConfig.
	Local bool
	// PushPullInterval overrides memberlist's full state sync interval
	// (which carries the session-directory digest). Default: memberlist's
	// (30 s LAN, 15 s Local).
	PushPullInterval time.Duration
	// LinkQueue is the per-link frame queue length. Default DefaultLinkQueue.
	LinkQueue int
	// Meta holds the addresses this node advertises. Meta.Name is forced to
	// NodeName; an empty Meta.Link is filled with the link listener's
	// address after Start.
	Meta NodeMeta
	// Logger receives all cluster and memberlist logs. The cluster adds no
	// "node" field: give it a logger that names the node (xcollect serve
	// does), so that each line carries the key once.
	Logger zerolog.Logger

	// repairGrace is how long a digest mismatch may wait for in-flight
	// deltas before a snapshot is requested. Default 2 s; tests shorten it.
	repairGrace time.Duration
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		BindPort:  DefaultBindPort,  // memberlist standard port; BindAddr must be set
		LinkQueue: DefaultLinkQueue, // frames per peer
	}
}

// DefaultLocalConfig returns a config for in-process tests on loopback:
// memberlist local timings, free ports, short push/pull interval.
func DefaultLocalConfig() Config {
	return Config{
		BindAddr:         "127.0.0.1",
		BindPort:         0, // LinkAddr: the bind address, a free port
		Local:            true,
		PushPullInterval: time.Second, // fast digest repair in tests
		LinkQueue:        DefaultLinkQueue,
	}
}

// withDefaults returns a filled copy of c.
func (c Config) withDefaults() (Config, error) {
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, fmt.Errorf("cluster: node name not set and hostname unknown: %w", err)
		}
		c.NodeName = h
	}
	if c.BindAddr == "" {
		c.BindAddr = c.AdvertiseAddr
	}
	if c.BindAddr == "" {
		return c, errors.New("cluster: no bind address: set BindAddr to the address gossip and links listen on (\"0.0.0.0\" listens on all interfaces)")
	}
	if c.BindPort == 0 && !c.Local {
		c.BindPort = DefaultBindPort
	}
	c.LinkAddr = linkAddr(c.LinkAddr, c.BindAddr, c.Local)
	if c.LinkQueue <= 0 {
		c.LinkQueue = DefaultLinkQueue
	}
	c.Join = append([]string(nil), c.Join...)
	c.SecretKey = append([]byte(nil), c.SecretKey...)
	c.Meta.Name = c.NodeName
	if c.repairGrace <= 0 {
		c.repairGrace = 2 * time.Second
	}
	return c, nil
}

// linkAddr fills in the link listener address: an empty host is the bind
// address, an empty address also gets the default port (0 when local).
func linkAddr(link, bind string, local bool) string {
	if link == "" {
		port := DefaultLinkPort
		if local {
			port = 0
		}
		return net.JoinHostPort(bind, strconv.Itoa(port))
	}
	host, port, err := net.SplitHostPort(link)
	if err != nil || host != "" {
		return link // Validate reports a malformed one
	}
	return net.JoinHostPort(bind, port)
}

// keyHelp says how to make a key; every key error ends with it.
const keyHelp = "make one with: head -c 32 /dev/urandom | base64 (the same on every node)"

// CheckKey reports whether key can be a cluster key: 16, 24 or 32 bytes
// (AES-128/192/256 for gossip) that look random. Text, as a typed password
// or a hex or base64 string whose decoding was forgotten, is refused: every
// byte printable ASCII happens to a random 16-byte key once in 7 million,
// to a 32-byte key practically never. So are keys with few distinct bytes.
func CheckKey(key []byte) error {
	switch len(key) {
	case 16, 24, 32:
	default:
		return fmt.Errorf("cluster: secret key is %d bytes; use 16, 24 or 32 random bytes; %s", len(key), keyHelp)
	}
	text := true
	var seen [256]bool
	distinct := 0
	for _, b := range key {
		if b < 0x20 || b > 0x7e {
			text = false
		}
		if !seen[b] {
			seen[b] = true
			distinct++
		}
	}
	switch {
	case text:
		return fmt.Errorf("%w: all %d bytes are printable text, as a password or an encoded string would be; %s", ErrWeakKey, len(key), keyHelp)
	case distinct < len(key)/2:
		return fmt.Errorf("%w: only %d distinct byte values in %d bytes; %s", ErrWeakKey, distinct, len(key), keyHelp)
	}
	return nil
}

// Validate reports every problem in c (after defaults) at once.
func (c Config) Validate() error {
	var errs []error
	switch {
	case len(c.SecretKey) > 0:
		if err := CheckKey(c.SecretKey); err != nil {
			errs = append(errs, err)
		}
	case !c.Insecure:
		errs = append(errs, fmt.Errorf("%w: without one anyone who reaches the gossip or link port can join and inject stanzas with any sender; %s (Insecure runs without a key, for tests only)", ErrNoKey, keyHelp))
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		errs = append(errs, fmt.Errorf("cluster: bind port %d out of range", c.BindPort))
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		errs = append(errs, fmt.Errorf("cluster: advertise port %d out of range", c.AdvertisePort))
	}
	if _, _, err := net.SplitHostPort(c.LinkAddr); err != nil {
		errs = append(errs, fmt.Errorf("cluster: link address %q: %w", c.LinkAddr, err))
	}
	if len(c.NodeName) > 255 {
		errs = append(errs, fmt.Errorf("cluster: node name is %d bytes; at most 255", len(c.NodeName)))
	}
	if err := validateMetaSize(c); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// validateMetaSize encodes the metadata with the largest load values and the
// longest link address the listener could produce, so that UpdateNode can
// never exceed memberlist.MetaMaxSize later.
func validateMetaSize(c Config) error {
	m := c.Meta
	if m.Link == "" {
		host, _, err := net.SplitHostPort(c.LinkAddr)
		if err != nil {
			host = ""
		}
		m.Link = net.JoinHostPort(host, "65535")
	}
	worst := Load{Sessions: 1<<31 - 1, Components: 1<<31 - 1, StanzaRate: 1e9, CPU: 1}
	n := len(encodeMeta(m, worst, 1<<63-1))
	if n > memberlist.MetaMaxSize {
		return fmt.Errorf("%w: %d bytes encoded, limit %d; shorten the advertised addresses", ErrMetaTooLarge, n, memberlist.MetaMaxSize)
	}
	return nil
}

// memberlistConfig builds memberlist's config from c (defaults applied).
func (c Config) memberlistConfig(d *delegate, ev *events, mg *merger, lw *mlLogWriter) *memberlist.Config {
	var mc *memberlist.Config
	if c.Local {
		mc = memberlist.DefaultLocalConfig()
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = c.NodeName
	mc.BindAddr = c.BindAddr
	mc.BindPort = c.BindPort
	mc.AdvertisePort = c.BindPort
	if c.AdvertiseAddr != "" {
		mc.AdvertiseAddr = c.AdvertiseAddr
	}
	if c.AdvertisePort != 0 {
		mc.AdvertisePort = c.AdvertisePort
	}
	if len(c.SecretKey) > 0 {
		mc.SecretKey = c.SecretKey
	}
	mc.Label = c.Label
	if c.PushPullInterval > 0 {
		mc.PushPullInterval = c.PushPullInterval
	}
	mc.Delegate = d
	mc.Events = ev
	mc.Merge = mg
	mc.Conflict = mg
	mc.Logger = log.New(lw, "", 0)
	mc.LogOutput = nil
	return mc
}

// seedAddrs returns the configured seeds plus the addresses JoinDNS resolves
// to (port = BindPort). The lookup uses c.Resolver and gives up after
// resolveTimeout or when ctx ends.
func (c Config) seedAddrs(ctx context.Context) ([]string, error) {
	seeds := append([]string(nil), c.Join...)
	if c.JoinDNS != "" {
		r := c.Resolver
		if r == nil {
			r = net.DefaultResolver
		}
		ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		hosts, err := r.LookupHost(ctx, c.JoinDNS)
		cancel()
		if err != nil {
			return seeds, fmt.Errorf("cluster: resolve join name %s: %w", c.JoinDNS, err)
		}
		port := c.BindPort
		if port == 0 {
			port = DefaultBindPort
		}
		for _, h := range hosts {
			seeds = append(seeds, net.JoinHostPort(h, strconv.Itoa(port)))
		}
	}
	return seeds, nil
}
