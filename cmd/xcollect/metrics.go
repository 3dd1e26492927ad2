package main

import (
	"context"

	"xcollect.dev/xcollect/cluster"
	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/metrics"
	"xcollect.dev/xcollect/server"
	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/postgres"
)

// watchNode points m at the node's parts (read at every scrape). store is
// the store as opened (not the instrumented one), so that the scrape's
// own reads are not counted as traffic; cl is nil on a single node.
func watchNode(m *metrics.Metrics, store storage.Store, srv *server.Server, mgr *component.Manager, cl *cluster.Cluster) {
	src := metrics.Sources{
		Server: func() metrics.ServerCounters {
			st := srv.Stats()
			c := metrics.ServerCounters{Sessions: st.Sessions.Load(), StanzasIn: st.StanzasIn.Load(),
				StanzasOut: st.StanzasOut.Load(), AuthFailures: st.AuthFailures.Load(), StreamErrors: st.StreamErrors.Load(),
				StreamErrorsByCondition: st.StreamErrorsByCondition()}
			for _, l := range st.Logins() {
				c.Logins = append(c.Logins, metrics.Login{Mechanism: l.Mechanism, Succeeded: l.Succeeded, Failed: l.Failed})
			}
			return c
		},
		Queues: func(ctx context.Context) ([]storage.QueueStats, error) {
			return store.Queue().Stats(ctx, "")
		},
		SessionsByDomain: srv.SessionsByDomain,
		Components:       mgr.Components,
		Connections:      mgr.ConnectionsOf,
	}
	if cl != nil {
		src.Members = func() []metrics.Member {
			var out []metrics.Member
			for _, n := range cl.Nodes() {
				out = append(out, metrics.Member{Name: n.Name, Alive: n.Alive, Sessions: n.Load.Sessions})
			}
			return out
		}
		src.Directory = cl.DirectorySize
	}
	if pg, ok := store.(*postgres.Store); ok {
		src.Pool = func() metrics.PoolStats {
			st := pg.PoolStat()
			return metrics.PoolStats{Acquired: st.AcquiredConns(), Idle: st.IdleConns(), Total: st.TotalConns(),
				Max: st.MaxConns(), Acquires: st.AcquireCount(), AcquireWait: st.AcquireDuration()}
		}
	}
	m.Watch(src)
}
