package component_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmpptest"
	"xcollect.dev/xcollect/server"
	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/embedded"
	"xcollect.dev/xcollect/storage/postgres"
)

var _ server.Queuer = (*component.Manager)(nil)

const (
	domain = "example.com"
	compA  = "collector.example.com"
	secret = "s3cret"
	wait   = 10 * time.Second
)

type env struct {
	t     *testing.T
	store storage.Store
	srv   *server.Server
	mgr   *component.Manager
	c2s   string
	comp  string
}

type envOpts struct {
	specs []component.Spec
	sync  bool // fsync commits (throughput test)
	cfg   func(*component.Config)
	quiet bool // log warnings only
	// postgres runs the node on a throw-away Postgres instead of the
	// embedded store.
	postgres bool
	// srvCfg, when set, adjusts the server config (e.g. resumption).
	srvCfg func(*server.Config)
}

func startEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t))
	if o.quiet {
		log = log.Level(zerolog.WarnLevel)
	}
	var st storage.Store
	var err error
	if o.postgres {
		pg := pgtest.Start(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st, err = postgres.Open(ctx, postgres.Config{DSN: pg.DSN(), Logger: log})
		cancel()
	} else {
		st, err = embedded.Open(t.TempDir()+"/store.db", embedded.Options{NoSync: !o.sync, Logger: log})
	}
	if err != nil {
		t.Fatal(err)
	}
	scfg := server.Config{Domains: []string{domain}, C2SAddr: "127.0.0.1:0", C2STLSAddr: "", RequireTLS: false, Logger: log}
	if o.srvCfg != nil {
		o.srvCfg(&scfg)
	}
	srv, err := server.New(scfg, st)
	if err != nil {
		t.Fatal(err)
	}
	specs := o.specs
	if specs == nil {
		specs = []component.Spec{{JID: compA, Secret: secret}}
	}
	cfg := component.Config{Addr: "127.0.0.1:0", Components: specs, Logger: log}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	mgr, err := component.New(cfg, st, srv, "n1")
	if err != nil {
		t.Fatal(err)
	}
	srv.SetQueuer(mgr)
	if err := mgr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: st, srv: srv, mgr: mgr, c2s: srv.Addr("c2s").String()}
	if a := mgr.Addr(); a != nil { // nil when the plain listener is disabled
		e.comp = a.String()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("server shutdown: %v", err)
		}
		if err := mgr.Shutdown(ctx); err != nil {
			t.Errorf("component shutdown: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("store close: %v", err)
		}
	})
	return e
}

func (e *env) user(local string) string {
	e.t.Helper()
	cred, err := storage.NewCredentials("pw-"+local, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	bare := local + "@" + domain
	if err := e.store.Users().CreateUser(context.Background(), bare, cred); err != nil {
		e.t.Fatal(err)
	}
	return bare
}

func (e *env) login(local, res string) *xmpptest.Conn {
	e.t.Helper()
	return xmpptest.DialC2S(e.t, e.c2s, domain, local, "pw-"+local, xmpptest.C2SOptions{Resource: res})
}

func (e *env) component(jid string) *xmpptest.Conn {
	e.t.Helper()
	return xmpptest.DialComponent(e.t, e.comp, jid, secret)
}

func isMessage(el *wire.Element) bool { return el.Name.Local == "message" }

func hasText(s string) func(*wire.Element) bool {
	return func(el *wire.Element) bool { return strings.Contains(string(el.Raw), s) }
}
