package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
)

// Config configures the c2s side of a node. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	// Domains are the virtual hosts served; at least one.
	Domains []string
	// C2SAddr is the STARTTLS listener address; "" disables it. Default ":5222".
	C2SAddr string
	// C2STLSAddr is the direct TLS listener address (XEP-0368); "" disables
	// it. Default ":5223".
	C2STLSAddr string
	// TLS holds the certificates; nil disables TLS (then RequireTLS must be
	// false).
	TLS *tls.Config
	// RequireTLS refuses authentication before STARTTLS. Default true.
	RequireTLS bool
	// MaxStanzaBytes bounds one stanza; larger ones close the stream with
	// policy-violation. Default 256 KiB.
	MaxStanzaBytes int
	// NegotiationTimeout bounds the time from connect to a bound session.
	// Default 30s.
	NegotiationTimeout time.Duration
	// IdleTimeout is the silence after which a session is pinged (XEP-0199).
	// Default 5m.
	IdleTimeout time.Duration
	// PingTimeout is how long a pinged session may stay silent before it is
	// closed with connection-timeout. Default 30s.
	PingTimeout time.Duration
	// WriteTimeout bounds one write to a client. Default 30s.
	WriteTimeout time.Duration
	// MaxOutQueue is the number of stanzas that may wait for a slow client
	// before its session is closed with policy-violation. Default 10000.
	MaxOutQueue int
	// OfflineExpiry is how long offline messages are kept. Default 720h.
	OfflineExpiry time.Duration
	// OfflineLimit is the maximum of offline messages per user. Default 1000.
	OfflineLimit int
	// Auth limits password guessing (per address and per account).
	Auth AuthLimits
	// AuthSecret derives the fake SCRAM salt and iteration count answered
	// for unknown accounts; give every node of a cluster the same one and
	// keep it across restarts, or a prober can tell fake salts from real
	// ones. Empty: a random secret for this process.
	AuthSecret []byte
	// MaxConns bounds the connections of all c2s listeners together; more
	// are refused with a resource-constraint stream error. Default 20000.
	MaxConns int
	// MaxConnsPerAddr bounds the connections of one remote address; more
	// are refused with a policy-violation stream error. Default 1000 (many
	// devices may share one NAT address).
	MaxConnsPerAddr int
	// SMResumeTimeout is how long a detached XEP-0198 session waits for
	// resumption. Default 5m; 0 after defaults disables resumption.
	SMResumeTimeout time.Duration
	// SMMaxUnacked bounds the outbound stanzas kept for resumption. Default 5000.
	SMMaxUnacked int
	// Steer, when set, is asked at each new c2s stream whether the client
	// should go to a lighter node; ok=true answers <see-other-host/> with
	// host (host:port) (RFC 6120 §4.9.3.19).
	Steer func() (host string, ok bool)
	// NodeName names this node in a cluster; it prefixes XEP-0198 ids so
	// that another node can find the session to resume.
	NodeName string
	// Version is reported by XEP-0092.
	Version string
	// Logger receives the server's logs.
	Logger zerolog.Logger
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Domains:            []string{"localhost"},
		C2SAddr:            ":5222",
		C2STLSAddr:         ":5223",
		RequireTLS:         true,
		MaxStanzaBytes:     256 << 10, // like Prosody's c2s_stanza_size_limit
		NegotiationTimeout: 30 * time.Second,
		IdleTimeout:        5 * time.Minute,
		PingTimeout:        30 * time.Second,
		WriteTimeout:       30 * time.Second,
		MaxOutQueue:        10000,
		OfflineExpiry:      30 * 24 * time.Hour,
		OfflineLimit:       1000,
		Auth: AuthLimits{
			FreeFailures:      3,
			Window:            5 * time.Minute,
			MaxDelay:          5 * time.Second,
			MaxConcurrent:     3,
			AccountFailures:   5,
			AccountWindow:     15 * time.Minute,
			AccountLockout:    time.Minute,
			MaxAccountLockout: time.Hour,
			MaxEntries:        100000,
		},
		MaxConns:        20000,
		MaxConnsPerAddr: 1000,
		SMResumeTimeout: 5 * time.Minute,
		SMMaxUnacked:    5000,
		Version:         "dev",
	}
}

// withDefaults fills zero fields from DefaultConfig on a copy.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if len(c.Domains) == 0 {
		c.Domains = d.Domains
	}
	if c.MaxStanzaBytes == 0 {
		c.MaxStanzaBytes = d.MaxStanzaBytes
	}
	if c.NegotiationTimeout == 0 {
		c.NegotiationTimeout = d.NegotiationTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = d.PingTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.MaxOutQueue == 0 {
		c.MaxOutQueue = d.MaxOutQueue
	}
	if c.OfflineExpiry == 0 {
		c.OfflineExpiry = d.OfflineExpiry
	}
	if c.OfflineLimit == 0 {
		c.OfflineLimit = d.OfflineLimit
	}
	c.Auth = c.Auth.withDefaults(d.Auth)
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	if c.MaxConnsPerAddr == 0 {
		c.MaxConnsPerAddr = d.MaxConnsPerAddr
	}
	if c.SMMaxUnacked == 0 {
		c.SMMaxUnacked = d.SMMaxUnacked
	}
	if c.Version == "" {
		c.Version = d.Version
	}
	return c
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if len(c.Domains) == 0 {
		errs = append(errs, errors.New("server: no domains: set domains to at least one host name"))
	}
	if c.TLS == nil && c.RequireTLS {
		errs = append(errs, errors.New("server: require_tls is set but no TLS certificate is configured: set tls.cert and tls.key, or require_tls: false for tests"))
	}
	if c.TLS == nil && c.C2STLSAddr != "" {
		errs = append(errs, errors.New("server: listeners.c2s_tls is set but no TLS certificate is configured"))
	}
	if c.MaxStanzaBytes < 0 || (c.MaxStanzaBytes > 0 && c.MaxStanzaBytes < 4096) {
		errs = append(errs, fmt.Errorf("server: limits.max_stanza_bytes = %d: must be at least 4096", c.MaxStanzaBytes))
	}
	if c.MaxConns < 0 || c.MaxConnsPerAddr < 0 {
		errs = append(errs, errors.New("server: limits.max_connections and limits.max_connections_per_address must not be negative"))
	}
	return errors.Join(errs...)
}

// withDefaults fills zero fields of l from d.
func (l AuthLimits) withDefaults(d AuthLimits) AuthLimits {
	set := func(v *int, dv int) {
		if *v == 0 {
			*v = dv
		}
	}
	setD := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	set(&l.FreeFailures, d.FreeFailures)
	setD(&l.Window, d.Window)
	setD(&l.MaxDelay, d.MaxDelay)
	set(&l.MaxConcurrent, d.MaxConcurrent)
	set(&l.AccountFailures, d.AccountFailures)
	setD(&l.AccountWindow, d.AccountWindow)
	setD(&l.AccountLockout, d.AccountLockout)
	setD(&l.MaxAccountLockout, d.MaxAccountLockout)
	set(&l.MaxEntries, d.MaxEntries)
	return l
}
