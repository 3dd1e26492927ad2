// Package config reads the xcollect configuration file (YAML), applies
// environment variables and defaults, and validates it, reporting every
// problem with its key and the fix. It knows the file format only; the
// command wires the result into server, component, cluster and storage
// configurations.
package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// File is the configuration file. Every field documents its default; the
// example in deployments/xcollect.example.yaml shows each key.
type File struct {
	Node       Node        `yaml:"node"`
	Domains    []string    `yaml:"domains"`  // served virtual hosts; default [localhost]
	DataDir    string      `yaml:"data_dir"` // embedded store and generated certificate; default ./data
	Log        Log         `yaml:"log"`
	Listeners  Listeners   `yaml:"listeners"`
	TLS        TLS         `yaml:"tls"`
	Storage    Storage     `yaml:"storage"`
	Limits     Limits      `yaml:"limits"`
	Auth       Auth        `yaml:"auth"`
	HTTP       HTTP        `yaml:"http"`
	Offline    Offline     `yaml:"offline"`
	SM         SM          `yaml:"stream_management"`
	Components []Component `yaml:"components"`
	Cluster    Cluster     `yaml:"cluster"`
}

// Node names this node.
type Node struct {
	Name string `yaml:"name"` // unique in a cluster; default the host name
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error; default info
	Format string `yaml:"format"` // auto (console on a terminal, JSON otherwise), console, json; default auto
}

// Listeners are the addresses the node listens on ("" disables one).
type Listeners struct {
	C2S          *string `yaml:"c2s"`           // STARTTLS; default ":5222"
	C2STLS       *string `yaml:"c2s_tls"`       // direct TLS (XEP-0368); default ":5223"
	Component    *string `yaml:"component"`     // XEP-0114; default ":5347"
	ComponentTLS *string `yaml:"component_tls"` // XEP-0114 over direct TLS; default "" (off)
	HTTP         *string `yaml:"http"`          // health and /v1/connect; default "127.0.0.1:5280" (loopback only)
}

// Validate checks that every listener that is on is a host:port a listener
// can open (a bare port such as 5222 is refused with the fix: ":5222").
func (l Listeners) Validate() error {
	var errs []error
	for _, x := range []struct {
		key  string
		addr *string
	}{{"c2s", l.C2S}, {"c2s_tls", l.C2STLS}, {"component", l.Component}, {"component_tls", l.ComponentTLS}, {"http", l.HTTP}} {
		if x.addr == nil || *x.addr == "" {
			continue
		}
		_, port, err := net.SplitHostPort(*x.addr) // any host; none = every interface
		if err != nil {
			errs = append(errs, fmt.Errorf("listeners.%s: %q is not host:port (for every interface write \":%s\"; \"\" turns it off)", x.key, *x.addr, strings.TrimPrefix(*x.addr, ":")))
			continue
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			errs = append(errs, fmt.Errorf("listeners.%s: %q: the port must be a number from 0 to 65535", x.key, *x.addr))
		}
	}
	return errors.Join(errs...)
}

// TLS configures certificates.
type TLS struct {
	Cert    string `yaml:"cert"`    // PEM certificate chain; empty: self-signed in data_dir
	Key     string `yaml:"key"`     // PEM private key
	Require *bool  `yaml:"require"` // refuse authentication without TLS; default true
}

// Storage selects the store: embedded unless postgres.dsn is set.
type Storage struct {
	Embedded struct {
		Path string `yaml:"path"` // default <data_dir>/xcollect.db
	} `yaml:"embedded"`
	Postgres struct {
		DSN            string        `yaml:"dsn"`             // or XCOLLECT_POSTGRES_DSN
		MaxConns       int32         `yaml:"max_conns"`       // default 8
		ConnectTimeout time.Duration `yaml:"connect_timeout"` // default 5s
		StartupTimeout time.Duration `yaml:"startup_timeout"` // default 30s
	} `yaml:"postgres"`
}

// Limits bound clients.
type Limits struct {
	MaxStanzaBytes     int           `yaml:"max_stanza_bytes"`    // default 262144
	NegotiationTimeout time.Duration `yaml:"negotiation_timeout"` // default 30s
	IdleTimeout        time.Duration `yaml:"idle_timeout"`        // ping after this silence; default 5m
	PingTimeout        time.Duration `yaml:"ping_timeout"`        // close after this without answer; default 30s
	// Connection caps; more connections get a stream error
	// (resource-constraint for the total, policy-violation per address).
	MaxConnections                 int `yaml:"max_connections"`                       // c2s listeners together; default 20000
	MaxConnectionsPerAddress       int `yaml:"max_connections_per_address"`           // c2s, one remote address; default 1000
	ComponentMaxConnections        int `yaml:"component_max_connections"`             // component listeners together; default 1000
	ComponentMaxConnectionsPerAddr int `yaml:"component_max_connections_per_address"` // default 50
}

// Auth limits password guessing on c2s (zero: the default).
type Auth struct {
	// Secret derives the fake SCRAM salt answered for unknown accounts;
	// or XCOLLECT_AUTH_SECRET. Default: derived from cluster.key, else a
	// random one kept in data_dir/auth.secret.
	Secret            string        `yaml:"secret"`
	FreeFailures      int           `yaml:"free_failures"`       // failures of one address answered at once; default 3
	FailureWindow     time.Duration `yaml:"failure_window"`      // memory of an address's failures; default 5m
	MaxDelay          time.Duration `yaml:"max_delay"`           // longest delay of one answer; default 5s
	MaxConcurrent     int           `yaml:"max_concurrent"`      // SASL exchanges an address in penalty may run at once; default 3
	AccountFailures   int           `yaml:"account_failures"`    // failures that lock an account; default 5
	AccountWindow     time.Duration `yaml:"account_window"`      // within this; default 15m
	AccountLockout    time.Duration `yaml:"account_lockout"`     // first lockout, doubling; default 1m
	MaxAccountLockout time.Duration `yaml:"max_account_lockout"` // default 1h
}

// HTTP configures the HTTP listener (listeners.http).
type HTTP struct {
	// AdminToken unlocks /v1/status, /metrics, the admin API /v1/admin/
	// and the dashboard's event stream (Authorization: Bearer <token>); or
	// XCOLLECT_ADMIN_TOKEN. Empty: they are not served.
	AdminToken     string `yaml:"admin_token"`
	MaxConnections int    `yaml:"max_connections"` // open connections; default 256
	// PublicMetrics serves /metrics without the admin token (for a
	// scraper that cannot send one). Default false.
	PublicMetrics bool `yaml:"public_metrics"`
}

// Offline configures offline messages (XEP-0160).
type Offline struct {
	Expiry     time.Duration `yaml:"expiry"`       // default 720h
	MaxPerUser int           `yaml:"max_per_user"` // default 1000
}

// SM configures XEP-0198 for clients.
type SM struct {
	ResumeTimeout *time.Duration `yaml:"resume_timeout"` // default 5m; 0 disables resumption
}

// Component is one XEP-0114 processor.
type Component struct {
	JID             string        `yaml:"jid"`
	Secret          string        `yaml:"secret"`
	Multi           bool          `yaml:"multiple_connections"` // default false: a second connection gets conflict
	ReceivePresence bool          `yaml:"receive_presence"`
	MaxRows         int64         `yaml:"max_rows"`      // default 1000000; 0 after default: no limit
	MaxBytes        int64         `yaml:"max_bytes"`     // default 1 GiB
	MaxAge          time.Duration `yaml:"max_age"`       // default 168h; older rows go to dead letters
	DedupeWindow    time.Duration `yaml:"dedupe_window"` // default 24h
}

// Cluster configures memberlist and node links. Empty join: single node.
// A cluster needs a key and an address: nothing listens on all interfaces
// unless told to (bind 0.0.0.0:7946).
type Cluster struct {
	Bind      string   `yaml:"bind"`      // gossip address host:port (port default 7946); default the advertise address; required
	Advertise string   `yaml:"advertise"` // address others reach; default the bind address
	Link      string   `yaml:"link"`      // node-to-node stanza links; default the bind host, port 7947; ":port" = the bind host
	Join      []string `yaml:"join"`      // seed addresses host:port
	JoinDNS   string   `yaml:"join_dns"`  // DNS name resolving to seeds
	Key       string   `yaml:"key"`       // base64 of 16/24/32 random bytes, gossip and link key; or XCOLLECT_CLUSTER_KEY; required
	// Insecure runs a cluster without a key, for tests only: gossip and
	// links are neither authenticated nor encrypted. Default false.
	Insecure bool `yaml:"insecure"`
	// QueueLease is how long a node's claim on a sender's partition of a
	// component queue lasts without renewal: the partitions of a node that
	// died move to another node's processors after at most this. Default 30s.
	QueueLease time.Duration `yaml:"queue_lease"`
	// Steering answers a new stream with <see-other-host/> naming a
	// lighter node, only when this node has at least MinSessions bound
	// sessions AND more than average*(1+Margin). Most client libraries do
	// not follow see-other-host (README, "Steering"), so the floor is high.
	Steering struct {
		Margin      float64 `yaml:"margin"`       // default 0.25
		MinSessions int     `yaml:"min_sessions"` // absolute floor; default 5000 (cluster.DefaultSteerMinSessions)
		Components  bool    `yaml:"components"`   // also steer components; default false
	} `yaml:"steering"`
}

// Enabled reports whether clustering is configured.
func (c Cluster) Enabled() bool { return len(c.Join) > 0 || c.JoinDNS != "" || c.Bind != "" }

// Load reads path ("" = no file: defaults only), applies the environment
// (XCOLLECT_POSTGRES_DSN, XCOLLECT_CLUSTER_KEY) and defaults.
func Load(path string) (File, error) {
	var f File
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return f, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true) // unknown keys are errors, with their line
		if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
			return f, fmt.Errorf("config: %s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
		}
	}
	// The environment overrides the file (secrets often come from it).
	if v := os.Getenv("XCOLLECT_POSTGRES_DSN"); v != "" {
		f.Storage.Postgres.DSN = v
	}
	if v := os.Getenv("XCOLLECT_CLUSTER_KEY"); v != "" {
		f.Cluster.Key = v
	}
	if v := os.Getenv("XCOLLECT_ADMIN_TOKEN"); v != "" {
		f.HTTP.AdminToken = v
	}
	if v := os.Getenv("XCOLLECT_AUTH_SECRET"); v != "" {
		f.Auth.Secret = v
	}
	return f.WithDefaults(), nil
}

// WithDefaults returns a copy of f with defaults filled in.
func (f File) WithDefaults() File {
	str := func(p **string, v string) {
		if *p == nil {
			*p = &v
		}
	}
	if len(f.Domains) == 0 {
		f.Domains = []string{"localhost"}
	}
	if f.DataDir == "" {
		f.DataDir = "./data"
	}
	if f.Node.Name == "" {
		f.Node.Name, _ = os.Hostname()
	}
	if f.Log.Level == "" {
		f.Log.Level = "info"
	}
	if f.Log.Format == "" {
		f.Log.Format = "auto"
	}
	str(&f.Listeners.C2S, ":5222")
	str(&f.Listeners.C2STLS, ":5223")
	str(&f.Listeners.Component, ":5347")
	str(&f.Listeners.ComponentTLS, "")
	str(&f.Listeners.HTTP, "127.0.0.1:5280")
	if f.HTTP.MaxConnections == 0 {
		f.HTTP.MaxConnections = 256
	}
	if f.TLS.Require == nil {
		t := true
		f.TLS.Require = &t
	}
	if f.Storage.Embedded.Path == "" {
		f.Storage.Embedded.Path = f.DataDir + "/xcollect.db"
	}
	if f.SM.ResumeTimeout == nil {
		d := 5 * time.Minute
		f.SM.ResumeTimeout = &d
	}
	comps := make([]Component, len(f.Components))
	for i, c := range f.Components {
		if c.MaxRows == 0 {
			c.MaxRows = 1_000_000
		}
		if c.MaxBytes == 0 {
			c.MaxBytes = 1 << 30
		}
		if c.MaxAge == 0 {
			c.MaxAge = 7 * 24 * time.Hour
		}
		if c.DedupeWindow == 0 {
			c.DedupeWindow = 24 * time.Hour
		}
		comps[i] = c
	}
	f.Components = comps
	if f.Cluster.Steering.Margin == 0 {
		f.Cluster.Steering.Margin = 0.25
	}
	if f.Cluster.Steering.MinSessions == 0 {
		f.Cluster.Steering.MinSessions = 5000 // = cluster.DefaultSteerMinSessions (config imports no xcollect package)
	}
	if f.Cluster.QueueLease == 0 {
		f.Cluster.QueueLease = 30 * time.Second
	}
	return f
}

// Validate reports every problem of f, each with its key and the fix.
func (f File) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if err := f.Listeners.Validate(); err != nil {
		errs = append(errs, err)
	}
	if (f.TLS.Cert == "") != (f.TLS.Key == "") {
		add("tls: set both tls.cert and tls.key, or neither (a self-signed certificate is generated in data_dir)")
	}
	switch f.Log.Format {
	case "auto", "console", "json":
	default:
		add("log.format: %q: use auto, console or json", f.Log.Format)
	}
	seen := map[string]bool{}
	for i, c := range f.Components {
		if c.JID == "" {
			add("components[%d].jid: empty: set the component's domain, e.g. collector.%s", i, f.Domains[0])
		}
		if c.Secret == "" {
			add("components[%d].secret: empty: set a shared secret for %s", i, c.JID)
		}
		if seen[c.JID] {
			add("components[%d].jid: %s is configured twice", i, c.JID)
		}
		seen[c.JID] = true
		tenant := false
		for _, d := range f.Domains {
			if d == c.JID {
				add("components[%d].jid: %s is also a served domain: use a subdomain such as collector.%s", i, c.JID, d)
			}
			tenant = tenant || strings.HasSuffix(c.JID, "."+d)
		}
		if c.JID != "" && c.ReceivePresence && !tenant {
			add("components[%d]: %s has receive_presence but is not a subdomain of a served domain (%s): a component sees only the presence of its own domain's users; use e.g. collector.%s",
				i, c.JID, strings.Join(f.Domains, ", "), f.Domains[0])
		}
		if c.MaxRows < 0 || c.MaxBytes < 0 || c.MaxAge < 0 || c.DedupeWindow < 0 {
			add("components[%d]: limits must not be negative", i)
		}
	}
	if f.Cluster.Enabled() && f.Storage.Postgres.DSN == "" {
		add("storage: cluster.join is set but the embedded store runs a single node; set storage.postgres.dsn (or XCOLLECT_POSTGRES_DSN)")
	}
	if f.Cluster.Enabled() {
		errs = append(errs, f.Cluster.validate()...)
	}
	if f.Cluster.Steering.Margin < 0 {
		add("cluster.steering.margin: %v: must not be negative", f.Cluster.Steering.Margin)
	}
	if f.Cluster.Steering.MinSessions < 0 {
		add("cluster.steering.min_sessions: %d: must not be negative", f.Cluster.Steering.MinSessions)
	}
	if f.Cluster.QueueLease < 2*time.Second {
		add("cluster.queue_lease: %v: must be at least 2s (leases are renewed every third of it)", f.Cluster.QueueLease)
	}
	if f.Limits.MaxConnections < 0 || f.Limits.MaxConnectionsPerAddress < 0 || f.Limits.ComponentMaxConnections < 0 || f.Limits.ComponentMaxConnectionsPerAddr < 0 {
		add("limits: connection caps must not be negative (0 = the default)")
	}
	if f.HTTP.MaxConnections < 0 {
		add("http.max_connections: %d: must not be negative", f.HTTP.MaxConnections)
	}
	if f.HTTP.AdminToken != "" && len(f.HTTP.AdminToken) < 16 {
		add("http.admin_token: too short: use at least 16 characters (e.g. openssl rand -hex 16)")
	}
	if f.Limits.MaxStanzaBytes != 0 && f.Limits.MaxStanzaBytes < 4096 {
		add("limits.max_stanza_bytes: %d: must be at least 4096", f.Limits.MaxStanzaBytes)
	}
	return errors.Join(errs...)
}

// validate checks a configured cluster's key and addresses; the key's
// length and randomness are checked where it is used (cluster.CheckKey,
// run by serve and serve --check-config).
func (c Cluster) validate() []error {
	var errs []error
	switch {
	case c.Key != "":
		if _, err := base64.StdEncoding.DecodeString(c.Key); err != nil {
			errs = append(errs, fmt.Errorf("cluster.key: not base64: %w (make one with: head -c 32 /dev/urandom | base64)", err))
		}
	case !c.Insecure:
		errs = append(errs, errors.New("cluster.key: empty: without a key anyone who reaches the gossip or link port can join the cluster and inject stanzas with any sender; "+
			"make one with: head -c 32 /dev/urandom | base64, and set the same on every node (cluster.key or XCOLLECT_CLUSTER_KEY); "+
			"cluster.insecure: true runs without one, for tests only"))
	}
	if c.Bind == "" && c.Advertise == "" {
		errs = append(errs, errors.New("cluster.bind: not set: set the address this node's gossip and links listen on, e.g. 10.0.0.1:7946 (0.0.0.0:7946 listens on all interfaces)"))
	}
	return errs
}
