package main

import (
	"net/http"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/cluster"
	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/adminapi"
	"xcollect.dev/xcollect/internal/config"
	"xcollect.dev/xcollect/server"
	"xcollect.dev/xcollect/storage"
)

// adminHandler is the node's admin API (HTTP port behind the token, and
// the admin socket); cl is nil on a single node.
func adminHandler(f config.File, store storage.Store, srv *server.Server, mgr *component.Manager, cl *cluster.Cluster, log zerolog.Logger) http.Handler {
	d := adminapi.Deps{
		Sessions: srv.SessionJIDs,
		Kick:     srv.Kick,
		Users:    store.Users(),
		Queue:    store.Queue(),
		Domains:  f.Domains,
		Components: func() []adminapi.Component {
			var out []adminapi.Component
			for _, c := range mgr.Components() {
				out = append(out, adminapi.Component{JID: c, Connections: mgr.ConnectionsOf(c)})
			}
			return out
		},
		Log: log,
	}
	if cl != nil {
		d.Members = func() []adminapi.Member {
			var out []adminapi.Member
			for _, n := range cl.Nodes() {
				out = append(out, adminapi.Member{Name: n.Name, Alive: n.Alive, Sessions: n.Load.Sessions, Score: n.Load.Score()})
			}
			return out
		}
	}
	return adminapi.Handler(d)
}
