package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/cluster"
	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/adminsock"
	"xcollect.dev/xcollect/internal/certs"
	"xcollect.dev/xcollect/internal/config"
	"xcollect.dev/xcollect/internal/dashboard"
	"xcollect.dev/xcollect/internal/metrics"
	"xcollect.dev/xcollect/server"
)

const serveHelp = `xcollect serve — run a node

  xcollect serve                          localhost on the embedded store in ./data
  xcollect serve --config xcollect.yaml   as configured (see deployments/xcollect.example.yaml)
  xcollect serve --check-config ...       validate the configuration, print the listeners serve opens, exit

  Secrets from the environment: XCOLLECT_CLUSTER_KEY, XCOLLECT_ADMIN_TOKEN
  (unlocks /v1/status, /metrics, the admin API /v1/admin/, the dashboard's
  data at /ui/ and --pprof on the HTTP port, which listens on
  127.0.0.1:5280 unless listeners.http says otherwise), XCOLLECT_AUTH_SECRET.

  SIGHUP reloads the TLS certificate (tls.cert/tls.key) without dropping
  connections; a changed components list is logged but needs a restart.`

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", serveHelp, stderr)
	var c common
	c.register(fs)
	check := fs.Bool("check-config", false, "validate the configuration, print the listeners and exit")
	c2s := fs.String("c2s", "", "STARTTLS client listener address (overrides listeners.c2s)")
	c2sTLS := fs.String("c2s-tls", "", "direct TLS client listener address (overrides listeners.c2s_tls)")
	compAddr := fs.String("component", "", "XEP-0114 component listener address (overrides listeners.component)")
	pprofOn := fs.Bool("pprof", false, "serve /debug/pprof/ on the HTTP listener (profiling; needs http.admin_token)")
	if err := parse(fs, args); err != nil {
		return err
	}
	f, err := c.load()
	if err != nil {
		return err
	}
	for flagVal, dst := range map[*string]**string{c2s: &f.Listeners.C2S, c2sTLS: &f.Listeners.C2STLS, compAddr: &f.Listeners.Component} {
		if *flagVal != "" {
			v := *flagVal
			*dst = &v
		}
	}
	if err := f.Listeners.Validate(); err != nil { // the flags too
		return err
	}
	log, err := newLogger(f, stderr)
	if err != nil {
		return err
	}
	recent := dashboard.NewRecent(20) // the dashboard's recent warnings and errors
	log = log.Hook(recent)
	tlsCert, err := loadTLS(f, log, *check)
	if err != nil {
		return err
	}
	tlsCfg := tlsCert.Config()
	scfg := serverConfig(f, tlsCfg, log)
	ccfg := componentConfig(f, tlsCfg, log)
	if err := scfg.Validate(); err != nil {
		return err
	}
	if err := ccfg.Validate(); err != nil {
		return err
	}
	var clcfg cluster.Config
	if f.Cluster.Enabled() {
		if clcfg, err = clusterConfig(f, log); err != nil { // key strength and addresses, also for --check-config
			return err
		}
	}
	if *check {
		// The cluster part too, as serve would build it.
		if f.Cluster.Enabled() {
			if err := clcfg.Validate(); err != nil {
				return err
			}
		}
		fmt.Fprintln(stdout, "configuration ok")
		fmt.Fprintln(stdout, "listeners: "+listenerSummary(f))
		return nil
	}
	if scfg.AuthSecret, err = authSecret(f); err != nil {
		return err
	}
	store, kind, err := openStore(ctx, f, log)
	if err != nil {
		return err
	}
	defer store.Close()
	var cl *cluster.Cluster
	adapter := &clusterAdapter{}
	if f.Cluster.Enabled() {
		if cl, err = cluster.New(clcfg, adapter.handlers()); err != nil {
			return err
		}
		adapter.c = cl
		steer := cluster.Steering{Margin: f.Cluster.Steering.Margin, MinSessions: f.Cluster.Steering.MinSessions}
		scfg.Steer = func() (string, bool) {
			n, ok := cl.ShouldSteer(steer)
			if !ok || n.C2S == "" {
				return "", false
			}
			return n.C2S, true
		}
		if f.Cluster.Steering.Components {
			ccfg.Steer = func() (string, bool) {
				n, ok := cl.ShouldSteer(steer)
				if !ok || n.Component == "" {
					return "", false
				}
				return n.Component, true
			}
		}
	}
	// The server and the component manager get the instrumented store: its
	// queue and offline calls are counted for /metrics.
	reg := metrics.New(log)
	counted := reg.InstrumentStore(store)
	srv, err := server.New(scfg, counted)
	if err != nil {
		return err
	}
	adapter.srv = srv
	if cl != nil {
		srv.SetCluster(adapter)
	}
	mgr, err := component.New(ccfg, counted, srv, f.Node.Name)
	if err != nil {
		return err
	}
	srv.SetQueuer(mgr)
	watchNode(reg, store, srv, mgr, cl)
	adminAPI := adminHandler(f, store, srv, mgr, cl, log)

	// Parts start in order and stop in reverse, also when a later one
	// fails to start.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stops []func()
	stopAll := func() {
		cancel()
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	if err := mgr.Start(ctx); err != nil {
		return err
	}
	stops = append(stops, func() { shutdown(log, mgr.Shutdown) })
	if err := srv.Start(); err != nil {
		stopAll()
		return err
	}
	stops = append(stops, func() { shutdown(log, srv.Shutdown) })
	if cl != nil {
		if err := cl.Start(ctx); err != nil {
			stopAll()
			return err
		}
		stops = append(stops, func() { shutdown(log, cl.Shutdown) })
		// Before the cluster stops: the other nodes drop their copies of
		// this node's XEP-0198 sessions, which Shutdown ends itself.
		stops = append(stops, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			srv.LeaveCluster(ctx)
		})
		loadDone := make(chan struct{})
		load := cluster.LoadSource{
			Sessions:   func() int { return int(srv.Stats().Sessions.Load()) },
			Components: mgr.Connections,
			StanzasIn:  srv.Stats().StanzasIn.Load,
		}
		go func() { defer close(loadDone); cl.PublishLoad(ctx, load) }()
		stops = append(stops, func() { <-loadDone })
	}
	httpDone, err := startHTTP(ctx, f, store, srv, cl, reg, adminAPI, newDashboard(ctx, f, store, srv, mgr, cl, recent, log), *pprofOn, log)
	if err != nil {
		stopAll()
		return err
	}
	stops = append(stops, func() { <-httpDone })
	hupDone := watchHangup(ctx, tlsCert, c.load, mgr.Components(), log)
	stops = append(stops, func() { <-hupDone })
	if f.Storage.Postgres.DSN == "" {
		// `xcollect user …` cannot open the embedded file while we hold it.
		sockDone, err := adminsock.Serve(ctx, filepath.Join(f.DataDir, adminsock.FileName), adminAPI, log)
		if err != nil {
			stopAll()
			return err
		}
		stops = append(stops, func() { <-sockDone })
	}
	log.Info().Strs("domains", f.Domains).Str("store", kind).Str("listeners", listenerSummary(f)).
		Int("components", len(f.Components)).Msg("xcollect node started")
	<-ctx.Done()
	log.Info().Msg("shutting down")
	stopAll()
	return nil
}

func shutdown(log zerolog.Logger, fn func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := fn(ctx); err != nil {
		log.Warn().Err(err).Msg("shutdown")
	}
}

// loadTLS loads the configured certificate or creates a self-signed one in
// data_dir, saying so.
// loadTLS loads tls.cert/tls.key, or the self-signed certificate in
// data_dir/tls (created on first use). With checkOnly nothing is written:
// --check-config loads a configured certificate to validate it, and
// otherwise uses a throw-away one in memory.
func loadTLS(f config.File, log zerolog.Logger, checkOnly bool) (*certs.Reloadable, error) {
	if checkOnly && f.TLS.Cert == "" {
		cert, _, _, err := certs.SelfSigned(f.Domains)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		return certs.NewReloadable(func() (tls.Certificate, error) { return cert, nil })
	}
	if f.TLS.Cert != "" {
		return certs.NewReloadable(func() (tls.Certificate, error) {
			cert, err := tls.LoadX509KeyPair(f.TLS.Cert, f.TLS.Key)
			if err != nil {
				return cert, fmt.Errorf("tls: load %s and %s: %w", f.TLS.Cert, f.TLS.Key, err)
			}
			return cert, nil
		})
	}
	dir := filepath.Join(f.DataDir, "tls")
	first := true
	return certs.NewReloadable(func() (tls.Certificate, error) {
		cert, created, err := certs.LoadOrCreate(dir, f.Domains)
		if err != nil {
			return cert, err
		}
		if first && created {
			log.Warn().Str("dir", dir).Strs("domains", f.Domains).Msg("no tls.cert configured: generated a self-signed certificate (clients must accept it; configure tls.cert/tls.key for production)")
		} else if first {
			log.Info().Str("dir", dir).Msg("using the self-signed certificate in the data directory")
		}
		first = false
		if err := os.Chmod(dir, 0o700); err != nil {
			return cert, fmt.Errorf("tls: %w", err)
		}
		return cert, nil
	})
}

func serverConfig(f config.File, tlsCfg *tls.Config, log zerolog.Logger) server.Config {
	c := server.DefaultConfig()
	c.Domains = f.Domains
	c.C2SAddr = *f.Listeners.C2S
	c.C2STLSAddr = *f.Listeners.C2STLS
	c.TLS = tlsCfg
	c.RequireTLS = *f.TLS.Require
	c.MaxStanzaBytes = f.Limits.MaxStanzaBytes
	c.NegotiationTimeout = f.Limits.NegotiationTimeout
	c.IdleTimeout = f.Limits.IdleTimeout
	c.PingTimeout = f.Limits.PingTimeout
	c.OfflineExpiry = f.Offline.Expiry
	c.OfflineLimit = f.Offline.MaxPerUser
	c.SMResumeTimeout = *f.SM.ResumeTimeout
	c.MaxConns = f.Limits.MaxConnections
	c.MaxConnsPerAddr = f.Limits.MaxConnectionsPerAddress
	c.Auth = server.AuthLimits{
		FreeFailures: f.Auth.FreeFailures, Window: f.Auth.FailureWindow, MaxDelay: f.Auth.MaxDelay,
		MaxConcurrent: f.Auth.MaxConcurrent, AccountFailures: f.Auth.AccountFailures,
		AccountWindow: f.Auth.AccountWindow, AccountLockout: f.Auth.AccountLockout,
		MaxAccountLockout: f.Auth.MaxAccountLockout,
	}
	c.Version = version
	c.NodeName = f.Node.Name
	c.Logger = log
	return c
}

func componentConfig(f config.File, tlsCfg *tls.Config, log zerolog.Logger) component.Config {
	c := component.DefaultConfig()
	c.Addr = *f.Listeners.Component
	c.TLSAddr = *f.Listeners.ComponentTLS
	c.TLS = tlsCfg
	c.MaxConns = f.Limits.ComponentMaxConnections
	c.MaxConnsPerAddr = f.Limits.ComponentMaxConnectionsPerAddr
	c.Logger = log
	c.LeaseDuration = f.Cluster.QueueLease
	if f.Limits.IdleTimeout > 0 { // the same keepalive as c2s; unset: the defaults
		c.IdleTimeout = f.Limits.IdleTimeout
	}
	if f.Limits.PingTimeout > 0 {
		c.PingTimeout = f.Limits.PingTimeout
	}
	c.Domain = f.Domains[0]
	for _, s := range f.Components {
		c.Components = append(c.Components, component.Spec{
			JID: s.JID, Secret: s.Secret, Multi: s.Multi, ReceivePresence: s.ReceivePresence,
			MaxRows: s.MaxRows, MaxBytes: s.MaxBytes, MaxAge: s.MaxAge, DedupeWindow: s.DedupeWindow,
		})
	}
	return c
}

// listenerSummary names every listener with its address or "off", as
// serve opens them.
func listenerSummary(f config.File) string {
	var b strings.Builder
	for _, l := range []struct{ name, addr string }{
		{"c2s", *f.Listeners.C2S}, {"c2s_tls", *f.Listeners.C2STLS}, {"component", *f.Listeners.Component},
		{"component_tls", *f.Listeners.ComponentTLS}, {"http", *f.Listeners.HTTP},
	} {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		addr := l.addr
		if addr == "" {
			addr = "off"
		}
		b.WriteString(l.name + "=" + addr)
	}
	return b.String()
}

// authSecret is the secret behind the fake SCRAM salts of unknown
// accounts: auth.secret, else derived from the cluster key (the same on
// every node), else a random one kept in data_dir/auth.secret (the same
// across restarts).
func authSecret(f config.File) ([]byte, error) {
	if f.Auth.Secret != "" {
		return []byte(f.Auth.Secret), nil
	}
	if f.Cluster.Key != "" {
		h := hmac.New(sha256.New, []byte(f.Cluster.Key))
		h.Write([]byte("xcollect auth secret"))
		return h.Sum(nil), nil
	}
	path := filepath.Join(f.DataDir, "auth.secret")
	b, err := os.ReadFile(path)
	switch {
	case err == nil && len(b) >= 32:
		return b, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("auth secret: read %s: %w", path, err)
	}
	b = make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	if err := os.MkdirAll(f.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("auth secret: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("auth secret: write %s: %w", path, err)
	}
	return b, nil
}
