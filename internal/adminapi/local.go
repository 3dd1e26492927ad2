package adminapi

import (
	"context"

	"xcollect.dev/xcollect/storage"
)

// Queues is what the `xcollect queue` commands need, from a running node
// (*Client) or from the store directly (StoreQueues): the same answers,
// so the same output.
type Queues interface {
	QueueStats(ctx context.Context, component string) ([]QueueStats, error)
	QueueList(ctx context.Context, component string, dead bool, limit int) ([]Row, error)
	QueueReplay(ctx context.Context, component string, ids []int64) (int, error)
	QueueDrop(ctx context.Context, component string, ids []int64) (int, error)
}

var _ Queues = (*Client)(nil)

// StoreQueues answers like the API from a store opened directly (a
// stopped node).
type StoreQueues struct{ Q storage.QueueStore }

var _ Queues = StoreQueues{}

// QueueStats: see Client.QueueStats.
func (s StoreQueues) QueueStats(ctx context.Context, component string) ([]QueueStats, error) {
	st, err := s.Q.Stats(ctx, component)
	if err != nil {
		return nil, err
	}
	out := make([]QueueStats, 0, len(st))
	for _, q := range st {
		out = append(out, QueueStats{Component: q.Component, Rows: q.Rows, Bytes: q.Bytes, Senders: q.Partitions,
			Leased: q.Leased, Oldest: q.Oldest, DeadLetters: q.DeadLetters})
	}
	return out, nil
}

// QueueList: see Client.QueueList.
func (s StoreQueues) QueueList(ctx context.Context, component string, dead bool, limit int) ([]Row, error) {
	rows, err := s.Q.List(ctx, component, dead, limit)
	if err != nil {
		return nil, err
	}
	out := make([]Row, 0, len(rows))
	for _, it := range rows {
		out = append(out, rowOf(it))
	}
	return out, nil
}

// QueueReplay: see Client.QueueReplay.
func (s StoreQueues) QueueReplay(ctx context.Context, component string, ids []int64) (int, error) {
	return s.Q.Replay(ctx, component, ids)
}

// QueueDrop: see Client.QueueDrop.
func (s StoreQueues) QueueDrop(ctx context.Context, component string, ids []int64) (int, error) {
	return s.Q.Drop(ctx, component, ids)
}
