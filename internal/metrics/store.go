package metrics

import (
	"context"
	"time"

	"xcollect.dev/xcollect/storage"
)

// InstrumentStore returns s with its queue and offline stores counted in
// m. Everything else passes through unchanged; results and errors are the
// inner store's.
func (m *Metrics) InstrumentStore(s storage.Store) storage.Store {
	return instrumentedStore{Store: s, m: m}
}

type instrumentedStore struct {
	storage.Store
	m *Metrics
}

func (s instrumentedStore) Queue() storage.QueueStore {
	return instrumentedQueue{QueueStore: s.Store.Queue(), m: s.m}
}

func (s instrumentedStore) Offline() storage.OfflineStore {
	return instrumentedOffline{OfflineStore: s.Store.Offline(), m: s.m}
}

type instrumentedQueue struct {
	storage.QueueStore
	m *Metrics
}

// failed counts err (if any) against op and returns it unchanged.
func (m *Metrics) failed(op string, err error) error {
	if err != nil {
		m.storeErrors.WithLabelValues(op).Inc()
	}
	return err
}

func (q instrumentedQueue) Enqueue(ctx context.Context, items []storage.QueueItem, limits func(string) storage.QueueLimits) ([]storage.EnqueueResult, error) {
	start := time.Now()
	res, err := q.QueueStore.Enqueue(ctx, items, limits)
	q.m.commitSeconds.Observe(time.Since(start).Seconds())
	if q.m.failed("queue_enqueue", err) != nil {
		return res, err
	}
	q.m.commitBatch.Observe(float64(len(items)))
	for i, r := range res {
		if i < len(items) {
			q.m.enqueued.WithLabelValues(items[i].Component, r.String()).Inc()
		}
	}
	return res, nil
}

func (q instrumentedQueue) Claim(ctx context.Context, component, owner string, lease time.Duration, maxPartitions, max int) ([]storage.QueueItem, error) {
	rows, err := q.QueueStore.Claim(ctx, component, owner, lease, maxPartitions, max)
	if q.m.failed("queue_claim", err) != nil {
		return rows, err
	}
	if len(rows) > 0 {
		q.m.delivered.WithLabelValues(component).Add(float64(len(rows)))
		again := 0
		for _, r := range rows {
			if r.Attempts > 1 {
				again++
			}
		}
		if again > 0 {
			q.m.redelivered.WithLabelValues(component).Add(float64(again))
		}
	}
	return rows, nil
}

func (q instrumentedQueue) Ack(ctx context.Context, component string, ids []int64) error {
	err := q.QueueStore.Ack(ctx, component, ids)
	if q.m.failed("queue_ack", err) == nil && len(ids) > 0 {
		q.m.acked.WithLabelValues(component).Add(float64(len(ids)))
	}
	return err
}

func (q instrumentedQueue) Expire(ctx context.Context, component string, before time.Time) (int, error) {
	n, err := q.QueueStore.Expire(ctx, component, before)
	if q.m.failed("queue_expire", err) == nil && n > 0 {
		q.m.deadLettered.WithLabelValues(component).Add(float64(n))
	}
	return n, err
}

func (q instrumentedQueue) Release(ctx context.Context, component, owner string) error {
	return q.m.failed("queue_release", q.QueueStore.Release(ctx, component, owner))
}

type instrumentedOffline struct {
	storage.OfflineStore
	m *Metrics
}

func (o instrumentedOffline) StoreOffline(ctx context.Context, to string, stanza []byte, limit int) error {
	err := o.OfflineStore.StoreOffline(ctx, to, stanza, limit)
	if o.m.failed("offline_store", err) == nil {
		o.m.offlineStored.Inc()
	}
	return err
}

func (o instrumentedOffline) FetchOffline(ctx context.Context, to string, notBefore time.Time) ([]storage.OfflineMessage, error) {
	msgs, err := o.OfflineStore.FetchOffline(ctx, to, notBefore)
	if o.m.failed("offline_fetch", err) == nil {
		o.m.offlineFetch.Add(float64(len(msgs)))
	}
	return msgs, err
}
