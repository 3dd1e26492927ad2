package adminsock_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/adminapi"
	"xcollect.dev/xcollect/internal/adminsock"
	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/embedded"
)

func TestUsersOverTheSocket(t *testing.T) {
	dir := t.TempDir()
	store, err := embedded.Open(filepath.Join(dir, "x.db"), embedded.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sctx, stop := context.WithCancel(ctx)
	path := filepath.Join(dir, adminsock.FileName)
	api := adminapi.Handler(adminapi.Deps{Users: store.Users(), Queue: store.Queue(), Domains: []string{"example.com"},
		Log: zerolog.New(zerolog.NewTestWriter(t))})
	done, err := adminsock.Serve(sctx, path, api, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	u, err := adminapi.DialSocket(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	cred, _ := storage.NewCredentials("pw", 0)
	if err := u.CreateUser(ctx, "alice@example.com", cred); err != nil {
		t.Fatal(err)
	}
	if err := u.CreateUser(ctx, "alice@example.com", cred); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second add: %v, want ErrExists", err)
	}
	got, err := store.Users().GetCredentials(ctx, "alice@example.com")
	if err != nil || !got.Verify("pw") {
		t.Fatalf("stored credentials: %v", err)
	}
	list, err := u.ListUsers(ctx, "example.com")
	if err != nil || !slices.Equal(list, []string{"alice@example.com"}) {
		t.Fatalf("list = %v, %v", list, err)
	}
	cred2, _ := storage.NewCredentials("new", 0)
	if err := u.SetCredentials(ctx, "alice@example.com", cred2); err != nil {
		t.Fatal(err)
	}
	if err := u.DeleteUser(ctx, "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := u.DeleteUser(ctx, "alice@example.com"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	stop()
	<-done
	if _, err := adminapi.DialSocket(ctx, path); err == nil {
		t.Fatal("socket still answers after the node stopped")
	}
}
