package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/cluster"
	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/adminsock"
	"xcollect.dev/xcollect/internal/certs"
	"xcollect.dev/xcollect/internal/config"
	"xcollect.dev/xcollect/server"
)

const serveHelp = `xcollect serve — run a node

  xcollect serve                          localhost on the embedded store in ./data
  xcollect serve --config xcollect.yaml   as configured (see deployments/xcollect.example.yaml)
  xcollect serve --check-config ...       load and validate the configuration, then exit`

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", serveHelp, stderr)
	var c common
	c.register(fs)
	check := fs.Bool("check-config", false, "validate the configuration and exit")
	c2s := fs.String("c2s", "", "STARTTLS client listener address (overrides listeners.c2s)")
	c2sTLS := fs.String("c2s-tls", "", "direct TLS client listener address (overrides listeners.c2s_tls)")
	compAddr := fs.String("component", "", "XEP-0114 component listener address (overrides listeners.component)")
	pprofOn := fs.Bool("pprof", false, "serve /debug/pprof/ on the HTTP listener (profiling)")
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
	log, err := newLogger(f, stderr)
	if err != nil {
		return err
	}
	tlsCfg, err := loadTLS(f, log)
	if err != nil {
		return err
	}
	scfg := serverConfig(f, tlsCfg, log)
	ccfg := componentConfig(f, log)
	if err := scfg.Validate(); err != nil {
		return err
	}
	if err := ccfg.Validate(); err != nil {
		return err
	}
	if *check {
		fmt.Fprintln(stdout, "configuration ok")
		return nil
	}
	store, kind, err := openStore(ctx, f, log)
	if err != nil {
		return err
	}
	defer store.Close()
	var cl *cluster.Cluster
	adapter := &clusterAdapter{}
	if f.Cluster.Enabled() {
		clcfg, err := clusterConfig(f, log)
		if err != nil {
			return err
		}
		if cl, err = cluster.New(clcfg, adapter); err != nil {
			return err
		}
		adapter.c = cl
		margin := f.Cluster.Steering.Margin
		scfg.Steer = func() (string, bool) {
			n, ok := cl.ShouldSteer(margin)
			if !ok || n.C2S == "" {
				return "", false
			}
			return n.C2S, true
		}
		if f.Cluster.Steering.Components {
			ccfg.Steer = func() (string, bool) {
				n, ok := cl.ShouldSteer(margin)
				if !ok || n.Component == "" {
					return "", false
				}
				return n.Component, true
			}
		}
	}
	srv, err := server.New(scfg, store)
	if err != nil {
		return err
	}
	adapter.srv = srv
	if cl != nil {
		srv.SetCluster(adapter)
	}
	mgr, err := component.New(ccfg, store, srv, f.Node.Name)
	if err != nil {
		return err
	}
	srv.SetQueuer(mgr)

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
		go func() { defer close(loadDone); loadLoop(ctx, cl, srv, mgr) }()
		stops = append(stops, func() { <-loadDone })
	}
	httpDone, err := startHTTP(ctx, f, store, srv, cl, *pprofOn, log)
	if err != nil {
		stopAll()
		return err
	}
	stops = append(stops, func() { <-httpDone })
	if f.Storage.Postgres.DSN == "" {
		// `xcollect user …` cannot open the embedded file while we hold it.
		sockDone, err := adminsock.Serve(ctx, filepath.Join(f.DataDir, adminsock.FileName), store.Users(), log)
		if err != nil {
			stopAll()
			return err
		}
		stops = append(stops, func() { <-sockDone })
	}
	log.Info().Strs("domains", f.Domains).Str("store", kind).Str("c2s", *f.Listeners.C2S).
		Str("c2s_tls", *f.Listeners.C2STLS).Str("component", *f.Listeners.Component).
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
func loadTLS(f config.File, log zerolog.Logger) (*tls.Config, error) {
	if f.TLS.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.TLS.Cert, f.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: load %s and %s: %w", f.TLS.Cert, f.TLS.Key, err)
		}
		return certs.ServerConfig(cert), nil
	}
	dir := filepath.Join(f.DataDir, "tls")
	cert, created, err := certs.LoadOrCreate(dir, f.Domains)
	if err != nil {
		return nil, err
	}
	if created {
		log.Warn().Str("dir", dir).Strs("domains", f.Domains).Msg("no tls.cert configured: generated a self-signed certificate (clients must accept it; configure tls.cert/tls.key for production)")
	} else {
		log.Info().Str("dir", dir).Msg("using the self-signed certificate in the data directory")
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return certs.ServerConfig(cert), nil
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
	c.Version = version
	c.NodeName = f.Node.Name
	c.Logger = log
	return c
}

func componentConfig(f config.File, log zerolog.Logger) component.Config {
	c := component.DefaultConfig()
	c.Addr = *f.Listeners.Component
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
