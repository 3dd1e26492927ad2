// Package adminsock serves a running node's admin API (internal/adminapi)
// on a Unix socket in its data directory (mode 0600, so only the node's
// user can connect, as with prosodyctl). Nodes on the embedded store
// serve it, since its file is the node's alone. The `xcollect user|queue`
// commands try it first: while such a node runs on this host they
// administer it through the socket, and only when no node answers do they
// open the store themselves (on Postgres they always use the database,
// which any number of processes may). No token is needed on the socket:
// the file mode is the access check.
package adminsock

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/httpapi"
)

// FileName is the socket's name in the data directory.
const FileName = "admin.sock"

// Serve serves api on a Unix socket at path until ctx ends; the returned
// channel is closed once the socket is closed and removed.
func Serve(ctx context.Context, path string, api http.Handler, log zerolog.Logger) (<-chan struct{}, error) {
	_ = os.Remove(path) // a stale socket of a previous run; the node's store lock or name proves we are alone
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	// An import of many accounts takes a while: no write timeout.
	hs := &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second}
	return httpapi.ServeUntil(ctx, hs, ln, func(err error) { log.Error().Err(err).Msg("admin socket") },
		func() { _ = os.Remove(path) }), nil // the socket goes with the node
}
