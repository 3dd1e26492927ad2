// Package httpapi serves a node's HTTP port (127.0.0.1:5280 by default):
// GET /healthz ("ok" or "not ok", nothing else), GET /readyz (the store
// and, on a cluster, having joined it: "ready" or "not ready"), GET /v1/connect (the
// addresses of the best node for a new client or processor, JSON), and,
// only with the admin token, GET /v1/status (this node's view of the
// cluster, JSON), GET /metrics (Prometheus; without the token when
// Deps.PublicMetrics), the admin API under /v1/admin/ (internal/adminapi),
// the dashboard's event stream /ui/events (its page, /ui/, holds no data
// and is served without the token) and /debug/pprof/ when enabled. It
// holds no state: every answer comes from the functions in Deps. NewServer
// applies the timeouts and connection cap; ServeUntil runs a server until
// its context ends (for the HTTP port and the admin socket of
// internal/adminsock).
package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"golang.org/x/net/netutil"
)

// Node is a node's advertised addresses and load.
type Node struct {
	Name      string  `json:"node"`
	C2S       string  `json:"c2s,omitempty"`
	C2STLS    string  `json:"c2s_tls,omitempty"`
	Component string  `json:"component,omitempty"`
	HTTP      string  `json:"http,omitempty"`
	Sessions  int     `json:"sessions"`
	Score     float64 `json:"score"`
}

// Deps are the node's parts the API reads. Nodes and Best are nil on a
// single node.
type Deps struct {
	Self      func() Node
	Health    func(ctx context.Context) error
	Nodes     func() []Node
	Best      func() (Node, bool)
	Directory func() int
	// HealthFailed, if set, gets the error behind a "not ok" (for the log;
	// the answer does not show it).
	HealthFailed func(error)
	// Ready, if set, is asked by /readyz after Health: nil when the node
	// may take clients (on a cluster: it has joined).
	Ready func() error
	// AdminToken unlocks /v1/status and /debug/pprof/ with
	// "Authorization: Bearer <token>". Empty: they are not served.
	AdminToken string
	// Metrics, if set, is served at GET /metrics behind the admin token,
	// or to anyone when PublicMetrics is true.
	Metrics       http.Handler
	PublicMetrics bool
	// Admin, if set, is served under /v1/admin/ behind the admin token.
	Admin http.Handler
	// UI, if set, serves the dashboard's files at /ui/, and UIEvents its
	// event stream at GET /ui/events behind the admin token.
	UI, UIEvents http.Handler
	// Pprof mounts net/http/pprof under /debug/pprof/ (profiling; off by
	// default since it exposes internals), behind the admin token.
	Pprof bool
}

// admin wraps h so that it answers only requests with the admin token;
// without a configured token it answers 404.
func admin(token string, h http.HandlerFunc) http.HandlerFunc {
	want := sha256.Sum256([]byte(token))
	return func(w http.ResponseWriter, r *http.Request) {
		if token == "" {
			http.Error(w, "not served: no http.admin_token configured", http.StatusNotFound)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		// Compare digests: constant time, and the length of the token does
		// not show either.
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="xcollect"`)
			http.Error(w, "admin token required", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

// Handler returns the API's http.Handler.
func Handler(d Deps) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := d.Health(ctx); err != nil {
			if d.HealthFailed != nil {
				d.HealthFailed(err)
			}
			http.Error(w, "not ok", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n")) // a failed write means the client left
	})
	// /readyz: the store answers and the node is part of its cluster
	// (a Kubernetes readiness probe; /healthz is the store alone).
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		err := d.Health(ctx)
		if err == nil && d.Ready != nil {
			err = d.Ready()
		}
		if err != nil {
			if d.HealthFailed != nil {
				d.HealthFailed(err)
			}
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n")) // a failed write means the client left
	})
	mux.HandleFunc("GET /v1/connect", func(w http.ResponseWriter, r *http.Request) {
		n := d.Self()
		if d.Best != nil {
			if best, ok := d.Best(); ok {
				n = best
			}
		}
		writeJSON(w, withHost(n, r.Host))
	})
	mux.HandleFunc("GET /v1/status", admin(d.AdminToken, func(w http.ResponseWriter, r *http.Request) {
		st := struct {
			Self      Node   `json:"self"`
			Members   []Node `json:"members,omitempty"`
			Directory int    `json:"directory"`
		}{Self: d.Self()}
		if d.Nodes != nil {
			st.Members = d.Nodes()
		}
		if d.Directory != nil {
			st.Directory = d.Directory()
		}
		writeJSON(w, st)
	}))
	if d.Metrics != nil {
		if d.PublicMetrics {
			mux.Handle("GET /metrics", d.Metrics)
		} else {
			mux.HandleFunc("GET /metrics", admin(d.AdminToken, d.Metrics.ServeHTTP))
		}
	}
	if d.Admin != nil {
		mux.HandleFunc("/v1/admin/", admin(d.AdminToken, d.Admin.ServeHTTP))
	}
	if d.UI != nil && d.UIEvents != nil {
		mux.Handle("GET /ui/", d.UI)
		mux.HandleFunc("GET /ui/events", admin(d.AdminToken, d.UIEvents.ServeHTTP))
		mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	}
	if d.Pprof {
		mux.HandleFunc("/debug/pprof/", admin(d.AdminToken, pprof.Index))
		mux.HandleFunc("/debug/pprof/cmdline", admin(d.AdminToken, pprof.Cmdline))
		mux.HandleFunc("/debug/pprof/profile", admin(d.AdminToken, pprof.Profile))
		mux.HandleFunc("/debug/pprof/symbol", admin(d.AdminToken, pprof.Symbol))
		mux.HandleFunc("/debug/pprof/trace", admin(d.AdminToken, pprof.Trace))
	}
	return mux
}

// withHost fills addresses that have no host (":5222", a wildcard listener)
// with the host the client used to reach this API.
func withHost(n Node, reqHost string) Node {
	host, _, err := net.SplitHostPort(reqHost)
	if err != nil {
		host = reqHost
	}
	fill := func(a string) string {
		h, p, err := net.SplitHostPort(a)
		if err != nil || (h != "" && h != "0.0.0.0" && h != "::") {
			return a
		}
		return net.JoinHostPort(host, p)
	}
	n.C2S, n.C2STLS, n.Component, n.HTTP = fill(n.C2S), fill(n.C2STLS), fill(n.Component), fill(n.HTTP)
	return n
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // a failed write means the client left
}

// Limits bound the HTTP port. Zero fields take the defaults of
// DefaultLimits.
type Limits struct {
	ReadHeaderTimeout time.Duration // default 5s
	ReadTimeout       time.Duration // whole request; default 10s
	WriteTimeout      time.Duration // whole response; default 60s (a pprof profile takes 30s)
	IdleTimeout       time.Duration // keep-alive connection without a request; default 30s
	MaxHeaderBytes    int           // default 16 KiB
	MaxConns          int           // open connections; more wait in the kernel's backlog; default 256
}

// DefaultLimits returns the defaults documented on Limits.
func DefaultLimits() Limits {
	return Limits{ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 60 * time.Second,
		IdleTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10, MaxConns: 256}
}

// NewServer returns an http.Server for h with the timeouts of l, and
// ln limited to l.MaxConns open connections.
func NewServer(h http.Handler, ln net.Listener, l Limits) (*http.Server, net.Listener) {
	d := DefaultLimits()
	pick := func(v, dv time.Duration) time.Duration {
		if v == 0 {
			return dv
		}
		return v
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.MaxConns == 0 {
		l.MaxConns = d.MaxConns
	}
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: pick(l.ReadHeaderTimeout, d.ReadHeaderTimeout),
		ReadTimeout:       pick(l.ReadTimeout, d.ReadTimeout),
		WriteTimeout:      pick(l.WriteTimeout, d.WriteTimeout),
		IdleTimeout:       pick(l.IdleTimeout, d.IdleTimeout),
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
	return hs, netutil.LimitListener(ln, l.MaxConns)
}

// ServeUntil serves hs on ln until ctx ends, then shuts it down (5 s for
// requests in flight). failed gets an error other than the shutdown;
// after, if not nil, runs once Serve returned. The returned channel is
// closed after that. Used for the HTTP port and the admin socket.
func ServeUntil(ctx context.Context, hs *http.Server, ln net.Listener, failed func(error), after func()) <-chan struct{} {
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx) // closes the listener either way
	})
	go func() { // owned by the caller through done
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			failed(err)
		}
		stop()
		if after != nil {
			after()
		}
	}()
	return done
}
