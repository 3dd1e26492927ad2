package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"xcollect.dev/xcollect/storage"
)

// Sources are the node's parts read at scrape time. Any nil field is left
// out (Members, Directory and Pool are nil on a single node or on the
// embedded store).
type Sources struct {
	// Server returns the server's counters.
	Server func() ServerCounters
	// SessionsByDomain counts this node's sessions by served domain.
	SessionsByDomain func() map[string]int
	// Queues returns the queue statistics of every component.
	Queues func(ctx context.Context) ([]storage.QueueStats, error)
	// Components returns the configured component JIDs: each gets its queue
	// series even while empty, and only these are reported (a component
	// removed from the file but with rows left shows up in `xcollect
	// queue stats`, not here).
	Components func() []string
	// Connections returns the live processor connections of a component on
	// this node.
	Connections func(component string) int
	// Members returns the cluster members as this node sees them.
	Members func() []Member
	// Directory returns the number of entries in the session directory.
	Directory func() int
	// Pool returns the Postgres pool's statistics.
	Pool func() PoolStats
	// Now is the clock for ages; time.Now when nil.
	Now func() time.Time
}

// ServerCounters are the server's live counters.
type ServerCounters struct {
	Sessions, StanzasIn, StanzasOut, AuthFailures, StreamErrors int64
	Logins                                                      []Login
	StreamErrorsByCondition                                     map[string]int64
}

// Login is one SASL mechanism's login outcomes.
type Login struct {
	Mechanism         string
	Succeeded, Failed int64
}

// Member is one cluster member.
type Member struct {
	Name     string
	Alive    bool
	Sessions int
}

// PoolStats are a Postgres connection pool's statistics.
type PoolStats struct {
	Acquired, Idle, Total, Max int32
	Acquires                   int64
	AcquireWait                time.Duration // total time spent waiting for a connection
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descSessions     = desc("xcollect_sessions", "Client sessions bound on this node.")
	descByDomain     = desc("xcollect_domain_sessions", "Client sessions bound on this node, by served domain.", "domain")
	descStanzasIn    = desc("xcollect_stanzas_in_total", "Stanzas read from client sessions on this node.")
	descStanzasOut   = desc("xcollect_stanzas_out_total", "Stanzas written to client sessions on this node.")
	descAuthFailures = desc("xcollect_auth_failures_total", "Failed client authentications on this node.")
	descLogins       = desc("xcollect_logins_total", "SASL logins on this node by mechanism and result (success, failure).", "mechanism", "result")
	descStreamErrors = desc("xcollect_stream_errors_total", "Client streams closed with a stream error on this node.")
	descConditions   = desc("xcollect_stream_errors_by_condition_total", "Client stream errors on this node by RFC 6120 condition.", "condition")
	descQueueRows    = desc("xcollect_queue_rows", "Rows waiting in a component's queue (all nodes: the queue is shared).", "component")
	descQueueBytes   = desc("xcollect_queue_bytes", "Stanza bytes waiting in a component's queue.", "component")
	descQueueOldest  = desc("xcollect_queue_oldest_age_seconds", "Age of the oldest row waiting in a component's queue; 0 when empty. A processor falling behind shows here first.", "component")
	descQueueParts   = desc("xcollect_queue_partitions", "Senders with rows waiting in a component's queue.", "component")
	descQueueLeased  = desc("xcollect_queue_leased_partitions", "Partitions of a component's queue leased to a live processor connection.", "component")
	descQueueDead    = desc("xcollect_queue_dead_letters", "Rows in a component's dead letters.", "component")
	descConnections  = desc("xcollect_component_connections", "Processor connections of a component on this node.", "component")
	descMembers      = desc("xcollect_cluster_members", "Cluster members as this node sees them, by state.", "state")
	descDirectory    = desc("xcollect_cluster_directory_entries", "Entries in the cluster's session directory on this node.")
	descPoolAcquired = desc("xcollect_postgres_pool_acquired_connections", "Postgres pool connections in use.")
	descPoolIdle     = desc("xcollect_postgres_pool_idle_connections", "Postgres pool connections idle.")
	descPoolTotal    = desc("xcollect_postgres_pool_connections", "Postgres pool connections open.")
	descPoolMax      = desc("xcollect_postgres_pool_max_connections", "Postgres pool size.")
	descPoolAcquires = desc("xcollect_postgres_pool_acquires_total", "Connections taken from the Postgres pool.")
	descPoolWait     = desc("xcollect_postgres_pool_acquire_wait_seconds_total", "Time spent waiting for a Postgres pool connection.")
)

// stateCollector reads Sources at each scrape.
type stateCollector struct {
	src Sources
	m   *Metrics
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessions, descByDomain, descStanzasIn, descStanzasOut, descAuthFailures, descLogins, descConditions, descStreamErrors,
		descQueueRows, descQueueBytes, descQueueOldest, descQueueParts, descQueueLeased, descQueueDead, descConnections,
		descMembers, descDirectory, descPoolAcquired, descPoolIdle, descPoolTotal, descPoolMax, descPoolAcquires, descPoolWait} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	if c.src.Server != nil {
		s := c.src.Server()
		gauge(descSessions, float64(s.Sessions))
		counter(descStanzasIn, float64(s.StanzasIn))
		counter(descStanzasOut, float64(s.StanzasOut))
		counter(descAuthFailures, float64(s.AuthFailures))
		counter(descStreamErrors, float64(s.StreamErrors))
		for cond, n := range s.StreamErrorsByCondition {
			counter(descConditions, float64(n), cond)
		}
		for _, l := range s.Logins {
			counter(descLogins, float64(l.Succeeded), l.Mechanism, "success")
			counter(descLogins, float64(l.Failed), l.Mechanism, "failure")
		}
	}
	if c.src.SessionsByDomain != nil {
		for domain, n := range c.src.SessionsByDomain() {
			gauge(descByDomain, float64(n), domain)
		}
	}
	c.collectQueues(gauge)
	if c.src.Members != nil {
		alive, dead := 0, 0
		for _, mb := range c.src.Members() {
			if mb.Alive {
				alive++
			} else {
				dead++
			}
		}
		gauge(descMembers, float64(alive), "alive")
		gauge(descMembers, float64(dead), "dead")
	}
	if c.src.Directory != nil {
		gauge(descDirectory, float64(c.src.Directory()))
	}
	if c.src.Pool != nil {
		p := c.src.Pool()
		gauge(descPoolAcquired, float64(p.Acquired))
		gauge(descPoolIdle, float64(p.Idle))
		gauge(descPoolTotal, float64(p.Total))
		gauge(descPoolMax, float64(p.Max))
		counter(descPoolAcquires, float64(p.Acquires))
		counter(descPoolWait, p.AcquireWait.Seconds())
	}
}

func (c *stateCollector) collectQueues(gauge func(*prometheus.Desc, float64, ...string)) {
	if c.src.Components == nil {
		return
	}
	names := c.src.Components()
	if len(names) == 0 {
		return
	}
	byName := make(map[string]storage.QueueStats, len(names))
	if c.src.Queues != nil {
		ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
		defer cancel()
		stats, err := c.src.Queues(ctx)
		if c.m.failed("queue_stats", err) != nil {
			c.m.log.Warn().Err(err).Msg("metrics: reading queue statistics failed; queue series left out of this scrape")
		} else {
			for _, st := range stats {
				byName[st.Component] = st
			}
			now := time.Now
			if c.src.Now != nil {
				now = c.src.Now
			}
			for _, name := range names {
				st := byName[name]
				age := 0.0
				if !st.Oldest.IsZero() {
					age = max(0, now().Sub(st.Oldest).Seconds())
				}
				gauge(descQueueRows, float64(st.Rows), name)
				gauge(descQueueBytes, float64(st.Bytes), name)
				gauge(descQueueOldest, age, name)
				gauge(descQueueParts, float64(st.Partitions), name)
				gauge(descQueueLeased, float64(st.Leased), name)
				gauge(descQueueDead, float64(st.DeadLetters), name)
			}
		}
	}
	if c.src.Connections != nil {
		for _, name := range names {
			gauge(descConnections, float64(c.src.Connections(name)), name)
		}
	}
}
