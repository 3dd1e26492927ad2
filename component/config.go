package component

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"mellium.im/xmpp/jid"
)

// DefaultPort is the XEP-0114 component port.
const DefaultPort = 5347

// Spec configures one component (one queue).
type Spec struct {
	// JID is the component's domain, e.g. "collector.example.com". Every
	// stanza addressed to it or to a JID at it goes to its queue.
	JID string
	// Secret is the XEP-0114 handshake secret; required.
	Secret string
	// Multi allows several connections at once (scale-out processors);
	// they share the queue by leasing per-sender partitions. Without it a
	// second connection is refused with a conflict stream error.
	Multi bool
	// ReceivePresence forwards the presence changes of the users of every
	// served domain to this component.
	ReceivePresence bool
	// MaxRows bounds the queued rows; 0 means no limit.
	MaxRows int64
	// MaxBytes bounds the queued stanza bytes; 0 means no limit.
	MaxBytes int64
	// MaxAge moves rows older than this to the dead letters (reason
	// "expired"); 0 means rows never expire.
	MaxAge time.Duration
	// DedupeWindow drops a repeat of (sender bare JID, XEP-0359 origin-id)
	// within this window; 0 disables dedupe. Reports without an origin-id
	// are never deduplicated (stanza ids repeat across streams).
	DedupeWindow time.Duration
}

// Config configures the component side of a node. Zero fields take the
// defaults of DefaultConfig.
type Config struct {
	// Addr is the XEP-0114 listener address; "" disables it. DefaultConfig
	// sets ":5347"; tests use "127.0.0.1:0".
	Addr string
	// TLSAddr is a direct-TLS XEP-0114 listener (TLS from the first byte,
	// for processors across a network); "" (the default) disables it.
	TLSAddr string
	// TLS holds the certificate for TLSAddr.
	TLS *tls.Config
	// MaxConns bounds the connections of the component listeners
	// together; more are refused with a resource-constraint stream error.
	// Default 1000.
	MaxConns int
	// MaxConnsPerAddr bounds the connections of one remote address; more
	// are refused with a policy-violation stream error. Default 50.
	MaxConnsPerAddr int
	// HandshakeFreeFailures is how many failed handshakes of one address
	// within 5 minutes are answered at once; after them every answer to
	// that address (success too) waits 250ms, doubling with each further
	// failure up to HandshakeMaxDelay. Default 2.
	HandshakeFreeFailures int
	// HandshakeMaxDelay bounds that delay. Default 5s.
	HandshakeMaxDelay time.Duration
	// HandshakeComponentFreeFailures is how many failed handshakes for one
	// component, from any addresses, within 5 minutes are answered at once
	// (a guesser rotating its source address). After them every handshake
	// for that component, right or wrong, waits like an address in penalty,
	// and at most HandshakeComponentMaxConcurrent run at once (more are
	// refused with policy-violation: retry later). Default 20.
	HandshakeComponentFreeFailures int
	// HandshakeComponentMaxConcurrent: see HandshakeComponentFreeFailures.
	// Default 4.
	HandshakeComponentMaxConcurrent int
	// Components are the configured components.
	Components []Spec
	// Logger receives the package's logs.
	Logger zerolog.Logger
	// LeaseDuration is how long a claimed partition stays leased to a
	// connection without renewal; a dead node's rows move to another
	// connection after it. Default 30s.
	LeaseDuration time.Duration
	// ClaimBatch is the maximum of rows one Claim returns. Default 256.
	ClaimBatch int
	// MaxInFlight bounds the rows a connection holds unacknowledged, so a
	// stuck component does not pull the whole queue. Default 1000.
	MaxInFlight int
	// CommitMaxBatch is the maximum of items one Enqueue commits. Default 1024.
	CommitMaxBatch int
	// Backlog is the maximum of items waiting in memory for a commit (while
	// the store is failing or slow); beyond it Submit fails at once with
	// ErrBacklogFull. Default 50000.
	Backlog int
	// ExpiryInterval is the period of the MaxAge expiry sweep. Default 1m.
	ExpiryInterval time.Duration
	// MaxStanzaBytes bounds one stanza from a component; larger ones close
	// the stream with policy-violation. Default 256 KiB.
	MaxStanzaBytes int
	// NegotiationTimeout bounds the time from connect to a completed
	// handshake. Default 10s.
	NegotiationTimeout time.Duration
	// WriteTimeout bounds one flush to a component. Default 30s.
	WriteTimeout time.Duration
	// IdleTimeout is the silence after which a component stream is probed:
	// an XEP-0199 ping, or <r/> when it enabled XEP-0198. Default 5m.
	IdleTimeout time.Duration
	// PingTimeout is how long a ping (the probe, or the one that follows
	// every batch of rows written to a component without XEP-0198), or the
	// <r/> after rows with XEP-0198, may stay unanswered (no element at all
	// for <r/> and the probe) before the stream is closed with
	// connection-timeout and its rows go to the next connection. Default 30s.
	PingTimeout time.Duration
	// Domain is the server's domain, the 'from' of the pings. Default: the
	// component's JID without its first label.
	Domain string
	// Steer, when set, is asked for each new component stream whether the
	// processor should connect to a lighter node; ok=true answers
	// <see-other-host/> with host (host:port). Nil (the default) never
	// steers components.
	Steer func() (host string, ok bool)
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Addr:                            fmt.Sprintf(":%d", DefaultPort),
		LeaseDuration:                   30 * time.Second, // a dead node's rows move after at most this
		ClaimBatch:                      256,              // one claim transaction per 256 rows
		MaxInFlight:                     1000,             // about 4 claims of rows in flight
		CommitMaxBatch:                  1024,             // bounds one Enqueue transaction
		Backlog:                         50000,            // about 50 MB of 1 KiB reports in memory
		ExpiryInterval:                  time.Minute,
		MaxStanzaBytes:                  256 << 10, // like the c2s limit
		NegotiationTimeout:              10 * time.Second,
		WriteTimeout:                    30 * time.Second,
		MaxConns:                        1000,
		MaxConnsPerAddr:                 50,
		HandshakeFreeFailures:           2,
		HandshakeMaxDelay:               5 * time.Second,
		HandshakeComponentFreeFailures:  20,
		HandshakeComponentMaxConcurrent: 4,
		IdleTimeout:                     5 * time.Minute,  // like the c2s default
		PingTimeout:                     30 * time.Second, // like the c2s default
	}
}

// withDefaults fills zero fields from DefaultConfig on a copy.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	if c.MaxConnsPerAddr == 0 {
		c.MaxConnsPerAddr = d.MaxConnsPerAddr
	}
	if c.HandshakeComponentFreeFailures == 0 {
		c.HandshakeComponentFreeFailures = d.HandshakeComponentFreeFailures
	}
	if c.HandshakeComponentMaxConcurrent == 0 {
		c.HandshakeComponentMaxConcurrent = d.HandshakeComponentMaxConcurrent
	}
	if c.HandshakeFreeFailures == 0 {
		c.HandshakeFreeFailures = d.HandshakeFreeFailures
	}
	if c.HandshakeMaxDelay == 0 {
		c.HandshakeMaxDelay = d.HandshakeMaxDelay
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = d.LeaseDuration
	}
	if c.ClaimBatch == 0 {
		c.ClaimBatch = d.ClaimBatch
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	if c.CommitMaxBatch == 0 {
		c.CommitMaxBatch = d.CommitMaxBatch
	}
	if c.Backlog == 0 {
		c.Backlog = d.Backlog
	}
	if c.ExpiryInterval == 0 {
		c.ExpiryInterval = d.ExpiryInterval
	}
	if c.MaxStanzaBytes == 0 {
		c.MaxStanzaBytes = d.MaxStanzaBytes
	}
	if c.NegotiationTimeout == 0 {
		c.NegotiationTimeout = d.NegotiationTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = d.PingTimeout
	}
	c.Components = append([]Spec(nil), c.Components...)
	return c
}

// Validate reports every problem of c at once. Call it on a config after
// defaults (New does both).
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("component: "+format, args...)) }
	seen := map[string]int{}
	for i, s := range c.Components {
		name := fmt.Sprintf("components[%d]", i)
		j, err := jid.Parse(s.JID)
		switch {
		case s.JID == "":
			bad("%s.jid is empty: set it to the component's domain, e.g. collector.example.com", name)
		case err != nil:
			bad("%s.jid = %q is not a valid JID: %v", name, s.JID, err)
		case j.Localpart() != "" || j.Resourcepart() != "":
			bad("%s.jid = %q must be a bare domain without user or resource", name, s.JID)
		case j.String() != s.JID:
			bad("%s.jid = %q is not normalised: write %q", name, s.JID, j.String())
		}
		if prev, ok := seen[s.JID]; ok && s.JID != "" {
			bad("%s.jid = %q duplicates components[%d]: give each component one entry", name, s.JID, prev)
		} else {
			seen[s.JID] = i
		}
		if s.Secret == "" {
			bad("%s (%s).secret is empty: set a shared secret for the XEP-0114 handshake", name, s.JID)
		}
		if s.MaxRows < 0 {
			bad("%s (%s).max_rows = %d: must be >= 0 (0 = no limit)", name, s.JID, s.MaxRows)
		}
		if s.MaxBytes < 0 {
			bad("%s (%s).max_bytes = %d: must be >= 0 (0 = no limit)", name, s.JID, s.MaxBytes)
		}
		if s.MaxAge < 0 {
			bad("%s (%s).max_age = %s: must be >= 0 (0 = no expiry)", name, s.JID, s.MaxAge)
		}
		if s.DedupeWindow < 0 {
			bad("%s (%s).dedupe_window = %s: must be >= 0 (0 = no dedupe)", name, s.JID, s.DedupeWindow)
		}
	}
	if c.LeaseDuration < 100*time.Millisecond {
		bad("lease_duration = %s: must be at least 100ms", c.LeaseDuration)
	}
	if c.ClaimBatch < 1 {
		bad("claim_batch = %d: must be at least 1", c.ClaimBatch)
	}
	if c.MaxInFlight < 1 {
		bad("max_in_flight = %d: must be at least 1", c.MaxInFlight)
	}
	if c.CommitMaxBatch < 1 {
		bad("commit_max_batch = %d: must be at least 1", c.CommitMaxBatch)
	}
	if c.Backlog < 1 {
		bad("backlog = %d: must be at least 1", c.Backlog)
	}
	if c.ExpiryInterval <= 0 {
		bad("expiry_interval = %s: must be > 0", c.ExpiryInterval)
	}
	if c.MaxStanzaBytes < 4096 {
		bad("max_stanza_bytes = %d: must be at least 4096", c.MaxStanzaBytes)
	}
	if c.NegotiationTimeout <= 0 {
		bad("negotiation_timeout = %s: must be > 0", c.NegotiationTimeout)
	}
	if c.WriteTimeout <= 0 {
		bad("write_timeout = %s: must be > 0", c.WriteTimeout)
	}
	if c.TLSAddr != "" && c.TLS == nil {
		bad("listeners.component_tls = %q needs a TLS certificate", c.TLSAddr)
	}
	if c.MaxConns < 0 || c.MaxConnsPerAddr < 0 {
		bad("limits.component_max_connections and limits.component_max_connections_per_address must not be negative")
	}
	if c.IdleTimeout <= 0 {
		bad("idle_timeout = %s: must be > 0", c.IdleTimeout)
	}
	if c.PingTimeout <= 0 {
		bad("ping_timeout = %s: must be > 0", c.PingTimeout)
	}
	if c.Domain != "" {
		if j, err := jid.Parse(c.Domain); err != nil || j.String() != c.Domain || j.Localpart() != "" || j.Resourcepart() != "" {
			bad("domain = %q: must be a normalised bare domain", c.Domain)
		}
	}
	return errors.Join(errs...)
}
