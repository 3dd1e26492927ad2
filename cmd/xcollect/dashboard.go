package main

import (
	"context"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/cluster"
	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/config"
	"xcollect.dev/xcollect/internal/dashboard"
	"xcollect.dev/xcollect/server"
	"xcollect.dev/xcollect/storage"
)

type dashboardHandlers struct{ files, events http.Handler }

// newDashboard builds the /ui/ handlers over the node's parts; streams end
// with ctx. cl is nil on a single node.
func newDashboard(ctx context.Context, f config.File, store storage.Store, srv *server.Server, mgr *component.Manager,
	cl *cluster.Cluster, recent *dashboard.Recent, log zerolog.Logger) dashboardHandlers {
	source := func(ctx context.Context) dashboard.Snapshot {
		st := srv.Stats()
		snap := dashboard.Snapshot{Node: f.Node.Name, Time: time.Now().UTC(), Sessions: st.Sessions.Load(),
			StanzasIn: st.StanzasIn.Load(), StanzasOut: st.StanzasOut.Load(), AuthFailures: st.AuthFailures.Load(),
			Errors: recent.List()}
		queues := map[string]storage.QueueStats{}
		if all, err := store.Queue().Stats(ctx, ""); err != nil {
			snap.QueueError = err.Error()
		} else {
			for _, q := range all {
				queues[q.Component] = q
			}
		}
		for _, jid := range mgr.Components() {
			q := queues[jid]
			c := dashboard.Component{JID: jid, Rows: q.Rows, Bytes: q.Bytes, DeadLetters: q.DeadLetters,
				Connections: mgr.ConnectionsOf(jid), LeasedSenders: q.Leased, WaitingSenders: q.Partitions}
			if !q.Oldest.IsZero() {
				c.OldestSeconds = max(0, time.Since(q.Oldest).Seconds())
			}
			snap.Components = append(snap.Components, c)
		}
		if cl != nil {
			for _, n := range cl.Nodes() {
				snap.Members = append(snap.Members, dashboard.Member{Name: n.Name, Alive: n.Alive, Sessions: n.Load.Sessions, Score: n.Load.Score()})
			}
		}
		return snap
	}
	files, events := dashboard.Handlers(ctx, dashboard.Config{Source: source, Log: log})
	return dashboardHandlers{files: files, events: events}
}
