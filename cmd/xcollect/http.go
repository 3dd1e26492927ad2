package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/cluster"
	"xcollect.dev/xcollect/internal/config"
	"xcollect.dev/xcollect/internal/httpapi"
	"xcollect.dev/xcollect/internal/metrics"
	"xcollect.dev/xcollect/server"
	"xcollect.dev/xcollect/storage"
)

func apiNode(n cluster.Node) httpapi.Node {
	return httpapi.Node{Name: n.Name, C2S: n.C2S, C2STLS: n.C2STLS, Component: n.Component, HTTP: n.HTTP,
		Sessions: n.Load.Sessions, Score: n.Load.Score()}
}

// startHTTP serves the HTTP API on f.Listeners.HTTP ("" disables it) until
// ctx ends; the returned channel closes when the server has stopped.
func startHTTP(ctx context.Context, f config.File, store storage.Store, srv *server.Server, cl *cluster.Cluster, reg *metrics.Metrics, adminAPI http.Handler, ui dashboardHandlers, pprofOn bool, log zerolog.Logger) (<-chan struct{}, error) {
	addr := *f.Listeners.HTTP
	if addr == "" {
		done := make(chan struct{})
		close(done)
		return done, nil
	}
	d := httpapi.Deps{
		Pprof:         pprofOn,
		Metrics:       reg.Handler(),
		PublicMetrics: f.HTTP.PublicMetrics,
		Admin:         adminAPI,
		UI:            ui.files,
		UIEvents:      ui.events,
		AdminToken:    f.HTTP.AdminToken,
		Health:        store.Ping,
		HealthFailed:  func(err error) { log.Warn().Err(err).Msg("healthz: store unreachable") },
		Self: func() httpapi.Node {
			return httpapi.Node{Name: f.Node.Name, C2S: *f.Listeners.C2S, C2STLS: *f.Listeners.C2STLS,
				Component: *f.Listeners.Component, HTTP: addr, Sessions: int(srv.Stats().Sessions.Load())}
		},
	}
	if cl != nil {
		// /v1/status shows this node as the other nodes see it, so that
		// self and its entry under members agree.
		d.Self = func() httpapi.Node { return apiNode(cl.Self()) }
		d.Ready = func() error {
			if !cl.Joined() {
				return errors.New("cluster not joined yet: no seed reached")
			}
			return nil
		}
		d.Nodes = func() []httpapi.Node {
			var out []httpapi.Node
			for _, n := range cl.Nodes() {
				out = append(out, apiNode(n))
			}
			return out
		}
		d.Best = func() (httpapi.Node, bool) {
			n, ok := cl.LeastLoaded()
			return apiNode(n), ok
		}
		d.Directory = cl.DirectorySize
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen http on %s: %w", addr, err)
	}
	lim := httpapi.DefaultLimits()
	lim.MaxConns = f.HTTP.MaxConnections
	hs, lln := httpapi.NewServer(httpapi.Handler(d), ln, lim)
	if f.HTTP.AdminToken == "" {
		log.Info().Msg("http: /v1/status, /metrics, /v1/admin/ and /debug/pprof/ are not served: set http.admin_token (or XCOLLECT_ADMIN_TOKEN)")
	}
	log.Info().Str("listener", "http").Str("addr", ln.Addr().String()).Msg("listening")
	return httpapi.ServeUntil(ctx, hs, lln, func(err error) { log.Error().Err(err).Msg("http server") }, nil), nil
}
