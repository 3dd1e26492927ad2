package testnode

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/certs"
	"xcollect.dev/xcollect/server"
	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/embedded"
)

// InProcessOptions configure StartInProcess.
type InProcessOptions struct {
	// Domains served; the self-signed certificate names the first.
	// Default [example.com].
	Domains []string
	// DirectTLS also listens for direct-TLS c2s (XEP-0368) on a random
	// port.
	DirectTLS bool
	// RequireTLS refuses authentication without TLS.
	RequireTLS bool
	// Users maps bare JIDs to passwords; they are created before start.
	Users map[string]string
	// Components are served on a XEP-0114 listener when not empty.
	Components []component.Spec
	// ComponentTLS also serves them over direct TLS.
	ComponentTLS bool
	// Server and Component, when set, adjust the configurations last.
	Server    func(*server.Config)
	Component func(*component.Config)
	// NodeName is the node name the component manager uses for its
	// partition leases; default "test".
	NodeName string
	// Store, when set, is used instead of an embedded store without fsync
	// (a Postgres, a synced store); it is closed at the cleanup.
	Store storage.Store
	// Logger, when set, replaces the test log at info level.
	Logger *zerolog.Logger
}

// InProcess is one xcollect node in the test's process: server and
// (with components) component manager on an embedded store in a temp
// directory (no fsync: the tests that need durability run processes),
// listening on random 127.0.0.1 ports with a self-signed certificate, and
// shut down at the test's cleanup.
type InProcess struct {
	Server     *server.Server
	Store      storage.Store
	Components *component.Manager // nil without components
	// Dir is a temp directory for the store and the test's own files.
	Dir string
	// C2S is the STARTTLS listener; C2STLS, Component and ComponentTLS
	// are "" when off.
	C2S, C2STLS, Component, ComponentTLS string
}

// StartInProcess starts a node; it fails the test on error.
func StartInProcess(t testing.TB, o InProcessOptions) *InProcess {
	t.Helper()
	if len(o.Domains) == 0 {
		o.Domains = []string{"example.com"}
	}
	n := &InProcess{Dir: t.TempDir(), Store: o.Store}
	if n.Store == nil {
		store, err := embedded.Open(filepath.Join(n.Dir, "x.db"), embedded.Options{NoSync: true})
		if err != nil {
			t.Fatalf("open the embedded store: %v", err)
		}
		n.Store = store
	}
	store := n.Store
	cert, _, _, err := certs.SelfSigned(o.Domains[:1])
	if err != nil {
		t.Fatalf("self-signed certificate: %v", err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	if o.Logger != nil {
		log = *o.Logger
	}
	cfg := server.DefaultConfig()
	cfg.Domains = o.Domains
	cfg.C2SAddr = "127.0.0.1:0"
	cfg.C2STLSAddr = ""
	if o.DirectTLS {
		cfg.C2STLSAddr = "127.0.0.1:0"
	}
	cfg.TLS = certs.ServerConfig(cert)
	cfg.RequireTLS = o.RequireTLS
	cfg.Logger = log
	if o.Server != nil {
		o.Server(&cfg)
	}
	if n.Server, err = server.New(cfg, store); err != nil {
		t.Fatalf("server: %v", err)
	}
	for bare, pass := range o.Users {
		n.AddUser(t, bare, pass)
	}
	if len(o.Components) > 0 {
		n.startComponents(t, o, cfg, log)
	}
	if err := n.Server.Start(); err != nil {
		t.Fatalf("server start: %v", err)
	}
	t.Cleanup(n.shutdown(t))
	if a := n.Server.Addr("c2s"); a != nil {
		n.C2S = a.String()
	}
	if a := n.Server.Addr("c2s_tls"); a != nil {
		n.C2STLS = a.String()
	}
	return n
}

// startComponents starts the component manager the server queues to.
func (n *InProcess) startComponents(t testing.TB, o InProcessOptions, scfg server.Config, log zerolog.Logger) {
	t.Helper()
	ccfg := component.DefaultConfig()
	ccfg.Addr = "127.0.0.1:0"
	ccfg.Components = o.Components
	ccfg.Logger = log.With().Str("side", "component").Logger()
	if o.ComponentTLS {
		ccfg.TLSAddr = "127.0.0.1:0"
		ccfg.TLS = scfg.TLS
	}
	if o.Component != nil {
		o.Component(&ccfg)
	}
	name := o.NodeName
	if name == "" {
		name = "test"
	}
	mgr, err := component.New(ccfg, n.Store, n.Server, name)
	if err != nil {
		t.Fatalf("component manager: %v", err)
	}
	n.Server.SetQueuer(mgr)
	if err := mgr.Start(context.Background()); err != nil {
		t.Fatalf("component manager start: %v", err)
	}
	n.Components = mgr
	if a := mgr.Addr(); a != nil { // nil when the plain listener is off
		n.Component = a.String()
	}
	if a := mgr.TLSAddr(); a != nil {
		n.ComponentTLS = a.String()
	}
}

// shutdown returns the cleanup: server, then components, then the store.
func (n *InProcess) shutdown(t testing.TB) func() {
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Server.Shutdown(ctx); err != nil {
			t.Errorf("server shutdown: %v", err)
		}
		if n.Components != nil {
			if err := n.Components.Shutdown(ctx); err != nil {
				t.Errorf("component shutdown: %v", err)
			}
		}
		n.Store.Close()
	}
}

// AddUser creates the account bare with password pass.
func (n *InProcess) AddUser(t testing.TB, bare, pass string) {
	t.Helper()
	cred, err := storage.NewCredentials(pass, 0)
	if err != nil {
		t.Fatalf("credentials for %s: %v", bare, err)
	}
	if err := n.Store.Users().CreateUser(context.Background(), bare, cred); err != nil {
		t.Fatalf("create user %s: %v", bare, err)
	}
}
