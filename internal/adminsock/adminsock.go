// Package adminsock lets `xcollect user …` manage the accounts of a running
// node on the embedded store, whose file only the node may open: the node
// serves its UserStore on a Unix socket in its data directory (mode 0600,
// so only the node's user can connect, as with prosodyctl), and the
// command, finding the store locked, uses the socket instead. Passwords are
// hashed by the command; only SCRAM salted keys cross the socket.
package adminsock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/httpapi"
	"xcollect.dev/xcollect/storage"
)

// FileName is the socket's name in the data directory.
const FileName = "admin.sock"

type request struct {
	User   string              `json:"user,omitempty"`
	Domain string              `json:"domain,omitempty"`
	Cred   storage.Credentials `json:"cred"`
}

// Serve serves users on a Unix socket at path until ctx ends; the returned
// channel is closed once the socket is closed and removed.
func Serve(ctx context.Context, path string, users storage.UserStore, log zerolog.Logger) (<-chan struct{}, error) {
	_ = os.Remove(path) // a stale socket of a previous run; the store's lock proves we are alone
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	mux := http.NewServeMux()
	handle := func(pattern string, fn func(ctx context.Context, r request) (any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, req *http.Request) {
			var r request
			if err := json.NewDecoder(req.Body).Decode(&r); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			out, err := fn(req.Context(), r)
			switch {
			case errors.Is(err, storage.ErrExists):
				http.Error(w, err.Error(), http.StatusConflict)
			case errors.Is(err, storage.ErrNotFound):
				http.Error(w, err.Error(), http.StatusNotFound)
			case err != nil:
				http.Error(w, err.Error(), http.StatusInternalServerError)
			default:
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(out) // the command left: nothing to do
			}
		})
	}
	handle("POST /users/add", func(ctx context.Context, r request) (any, error) {
		log.Info().Str("jid", r.User).Msg("user added through the admin socket")
		return nil, users.CreateUser(ctx, r.User, r.Cred)
	})
	handle("POST /users/passwd", func(ctx context.Context, r request) (any, error) {
		return nil, users.SetCredentials(ctx, r.User, r.Cred)
	})
	handle("POST /users/delete", func(ctx context.Context, r request) (any, error) {
		log.Info().Str("jid", r.User).Msg("user deleted through the admin socket")
		return nil, users.DeleteUser(ctx, r.User)
	})
	handle("POST /users/list", func(ctx context.Context, r request) (any, error) {
		return users.ListUsers(ctx, r.Domain)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return httpapi.ServeUntil(ctx, hs, ln, func(err error) { log.Error().Err(err).Msg("admin socket") },
		func() { _ = os.Remove(path) }), nil // the socket goes with the node
}

// Users is a storage.UserStore that talks to a running node's socket.
// GetCredentials is not offered.
type Users struct {
	c *http.Client
}

// Dial returns the running node's UserStore at path, or an error when no
// node listens there.
func Dial(path string) (*Users, error) {
	conn, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, err
	}
	conn.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Users{c: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

var _ storage.UserStore = (*Users)(nil)

func (u *Users) call(ctx context.Context, op string, r request, out any) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://node/users/"+op, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := u.c.Do(req)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if out != nil {
			return json.NewDecoder(resp.Body).Decode(out)
		}
		return nil
	case http.StatusConflict:
		return storage.ErrExists
	case http.StatusNotFound:
		return storage.ErrNotFound
	}
	var msg bytes.Buffer
	_, _ = msg.ReadFrom(resp.Body)
	return fmt.Errorf("admin socket: %s: %s", resp.Status, bytes.TrimSpace(msg.Bytes()))
}

// CreateUser adds an account on the running node.
func (u *Users) CreateUser(ctx context.Context, user string, cred storage.Credentials) error {
	return u.call(ctx, "add", request{User: user, Cred: cred}, nil)
}

// SetCredentials changes a password on the running node.
func (u *Users) SetCredentials(ctx context.Context, user string, cred storage.Credentials) error {
	return u.call(ctx, "passwd", request{User: user, Cred: cred}, nil)
}

// DeleteUser removes an account on the running node.
func (u *Users) DeleteUser(ctx context.Context, user string) error {
	return u.call(ctx, "delete", request{User: user}, nil)
}

// ListUsers lists a domain's accounts on the running node.
func (u *Users) ListUsers(ctx context.Context, domain string) ([]string, error) {
	var out []string
	err := u.call(ctx, "list", request{Domain: domain}, &out)
	return out, err
}

// GetCredentials is not available over the socket.
func (u *Users) GetCredentials(context.Context, string) (storage.Credentials, error) {
	return storage.Credentials{}, errors.New("admin socket: credentials are not readable")
}
