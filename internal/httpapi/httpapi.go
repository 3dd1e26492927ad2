// Package httpapi serves a node's HTTP port (5280 by default): GET /healthz
// (the store answers), GET /v1/connect (the addresses of the best node for
// a new client or processor, JSON), GET /v1/status (this node's view of
// the cluster, JSON) and, when enabled, /debug/pprof/. It holds no state: every answer comes from the
// functions in Deps.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
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
	// Pprof mounts net/http/pprof under /debug/pprof/ (profiling; off by
	// default since it exposes internals).
	Pprof bool
}

// Handler returns the API's http.Handler.
func Handler(d Deps) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := d.Health(ctx); err != nil {
			http.Error(w, "store unreachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n")) // a failed write means the client left
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
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
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
	})
	if d.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
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
