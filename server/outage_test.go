package server_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/server"
	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/embedded"
)

// downStore fails credential lookups while down is set, as a store whose
// database is unreachable does.
type downStore struct {
	storage.Store
	down *atomic.Bool
}

type downUsers struct {
	storage.UserStore
	down *atomic.Bool
}

func (s downStore) Users() storage.UserStore { return downUsers{s.Store.Users(), s.down} }

func (u downUsers) GetCredentials(ctx context.Context, user string) (storage.Credentials, error) {
	if u.down.Load() {
		return storage.Credentials{}, errors.New("connection refused")
	}
	return u.UserStore.GetCredentials(ctx, user)
}

// TestLoginDuringStoreOutage: while the store is unreachable a login gets
// <temporary-auth-failure/> (RFC 6120 §6.5.12), not <not-authorized/>.
func TestLoginDuringStoreOutage(t *testing.T) {
	inner, err := embedded.Open(filepath.Join(t.TempDir(), "x.db"), embedded.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	cred, _ := storage.NewCredentials("a", 0)
	if err := inner.Users().CreateUser(context.Background(), "alice@example.com", cred); err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	cfg := server.DefaultConfig()
	cfg.Domains = []string{"example.com"}
	cfg.C2SAddr, cfg.C2STLSAddr, cfg.RequireTLS = "127.0.0.1:0", "", false
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t))
	srv, err := server.New(cfg, downStore{inner, &down})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	down.Store(true)
	r := dialRaw(t, srv.Addr("c2s").String())
	r.write(header("example.com"))
	r.readUntil("</stream:features>", 5*time.Second)
	r.write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>" + b64([]byte("n,,n=alice,r=abcdefghijklmnop")) + "</auth>")
	if got := r.readUntil("</failure>", 5*time.Second); !strings.Contains(got, "temporary-auth-failure") {
		t.Fatalf("login while the store is down: %q", got)
	}
	down.Store(false)
	ok := dialRaw(t, srv.Addr("c2s").String())
	ok.login("alice", "example.com", "a", "back")
}
