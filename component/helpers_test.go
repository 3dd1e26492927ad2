package component_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/internal/testnode"
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
	specs := o.specs
	if specs == nil {
		specs = []component.Spec{{JID: compA, Secret: secret}}
	}
	n := testnode.StartInProcess(t, testnode.InProcessOptions{
		Domains: []string{domain}, Store: st, Logger: &log, NodeName: "n1", Components: specs,
		Server: func(c *server.Config) {
			c.TLS = nil // plain c2s: these tests are about the queue
			if o.srvCfg != nil {
				o.srvCfg(c)
			}
		},
		Component: o.cfg,
	})
	return &env{t: t, store: n.Store, srv: n.Server, mgr: n.Components, c2s: n.C2S, comp: n.Component}
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
