// Package metrics exposes a node's numbers in the Prometheus text format
// (GET /metrics, github.com/prometheus/client_golang). Two kinds of
// numbers:
//
//   - flow, counted as it happens by InstrumentStore, a decorator of
//     storage.Store that the node hands to the server and the component
//     manager: reports enqueued (by outcome: queued, duplicate = dedupe hit,
//     full), rows handed to processors (and of those, redelivered), acked,
//     dead-lettered, the group commit's batch size and latency, offline
//     messages stored and fetched, store errors by operation;
//   - state, read at scrape time from the functions in Sources: sessions,
//     stanza and error counters of the server, per-component queue rows,
//     bytes, oldest age, dead letters and connected instances, cluster
//     members by state and directory size, Postgres pool statistics.
//
// Labels are bounded: component JIDs (configured), store operations,
// enqueue outcomes, member states. Never a user.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Metrics is one node's registry. Create it with New; it is safe for
// concurrent use.
type Metrics struct {
	registry *prometheus.Registry
	log      zerolog.Logger

	enqueued      *prometheus.CounterVec // component, result
	delivered     *prometheus.CounterVec // component
	redelivered   *prometheus.CounterVec // component
	acked         *prometheus.CounterVec // component
	deadLettered  *prometheus.CounterVec // component
	commitBatch   prometheus.Histogram
	commitSeconds prometheus.Histogram
	offlineStored prometheus.Counter
	offlineFetch  prometheus.Counter
	storeErrors   *prometheus.CounterVec // operation
}

// New returns a registry with the Go runtime and process collectors and
// the flow counters of InstrumentStore. Watch adds the node's state.
func New(log zerolog.Logger) *Metrics {
	m := &Metrics{registry: prometheus.NewRegistry(), log: log}
	m.enqueued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "xcollect_queue_enqueued_total",
		Help: "Reports submitted to a component queue, by outcome: queued (durable), duplicate (dedupe hit on the origin-id), full (refused by the row or byte limit).",
	}, []string{"component", "result"})
	m.delivered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "xcollect_queue_delivered_total",
		Help: "Queue rows handed to a connected processor on this node (claimed), redeliveries included.",
	}, []string{"component"})
	m.redelivered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "xcollect_queue_redelivered_total",
		Help: "Queue rows handed out again after an earlier delivery was not acknowledged.",
	}, []string{"component"})
	m.acked = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "xcollect_queue_acked_total",
		Help: "Queue rows acknowledged by a processor and deleted.",
	}, []string{"component"})
	m.deadLettered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "xcollect_queue_dead_lettered_total",
		Help: "Queue rows moved to the dead letters because they outlived the component's max_age.",
	}, []string{"component"})
	m.commitBatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "xcollect_queue_commit_batch_size",
		Help:    "Reports per group commit (one store transaction with fsync).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 12), // 1 … 2048
	})
	m.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "xcollect_queue_commit_seconds",
		Help:    "Duration of one group commit (store transaction with fsync), failed ones included.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms … 4 s
	})
	m.offlineStored = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "xcollect_offline_stored_total",
		Help: "Messages stored for users who were offline.",
	})
	m.offlineFetch = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "xcollect_offline_fetched_total",
		Help: "Offline messages fetched for delivery to a session that logged in.",
	})
	m.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "xcollect_store_errors_total",
		Help: "Failed store calls, by operation (queue and offline operations, and the scrape's own reads).",
	}, []string{"operation"})
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.enqueued, m.delivered, m.redelivered, m.acked, m.deadLettered,
		m.commitBatch, m.commitSeconds, m.offlineStored, m.offlineFetch, m.storeErrors,
	)
	return m
}

// Watch adds a collector that reads src at every scrape. Call it once,
// when the parts src reads exist, before serving Handler.
func (m *Metrics) Watch(src Sources) {
	m.registry.MustRegister(&stateCollector{src: src, m: m})
}

// scrapeTimeout bounds the store reads of one scrape.
const scrapeTimeout = 5 * time.Second

// Handler serves the registry in the Prometheus text format (OpenMetrics
// when the scraper asks for it). A collector that fails is logged and left
// out; the rest is still served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		EnableOpenMetrics: true,
		ErrorHandling:     promhttp.ContinueOnError,
		ErrorLog:          errorLog{m.log},
		Timeout:           scrapeTimeout + time.Second,
	})
}

// Registry returns the registry, for tests and for parts that add their
// own collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// errorLog adapts zerolog to promhttp's Println logger.
type errorLog struct{ log zerolog.Logger }

func (e errorLog) Println(v ...any) {
	e.log.Warn().Interface("error", v).Msg("metrics: scrape error")
}
