package adminapi

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"xcollect.dev/xcollect/storage"
)

// QueueStats is one component's queue.
type QueueStats struct {
	Component   string    `json:"component"`
	Rows        int64     `json:"rows"`
	Bytes       int64     `json:"bytes"`
	Senders     int64     `json:"senders"`
	Leased      int64     `json:"leased"`
	Oldest      time.Time `json:"oldest,omitzero"`
	DeadLetters int64     `json:"dead_letters"`
}

// Row is one queued row or dead letter.
type Row struct {
	ID       int64     `json:"id"`
	Enqueued time.Time `json:"enqueued"`
	From     string    `json:"from"`
	StanzaID string    `json:"stanza_id,omitempty"`
	Bytes    int       `json:"bytes"`
	Attempts int       `json:"attempts"`
	Reason   string    `json:"reason,omitempty"`
}

// IDs is the body of replay and drop; empty means all dead letters.
type IDs struct {
	IDs []int64 `json:"ids,omitempty"`
}

// Count is the answer of replay and drop.
type Count struct {
	Count int `json:"count"`
}

// maxListRows bounds GET /v1/admin/queues/{component}.
const maxListRows = 10000

func (a *api) queueStats(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := storeContext(r)
	defer cancel()
	out, err := StoreQueues{a.d.Queue}.QueueStats(ctx, r.URL.Query().Get("component"))
	if err != nil {
		fail(w, fmt.Errorf("queue stats: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) queueList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 50
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			fail(w, badRequest("limit %q: want a positive number", s))
			return
		}
		limit = min(n, maxListRows)
	}
	dead := q.Get("dead") == "1" || q.Get("dead") == "true"
	ctx, cancel := storeContext(r)
	defer cancel()
	out, err := StoreQueues{a.d.Queue}.QueueList(ctx, r.PathValue("component"), dead, limit)
	if err != nil {
		fail(w, fmt.Errorf("queue list: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func rowOf(it storage.QueueItem) Row {
	return Row{ID: it.ID, Enqueued: it.Enqueued, From: it.From, StanzaID: it.StanzaID, Bytes: len(it.Stanza),
		Attempts: it.Attempts, Reason: it.Reason}
}

func (a *api) queueReplay(w http.ResponseWriter, r *http.Request) { a.deadLetters(w, r, "replay") }
func (a *api) queueDrop(w http.ResponseWriter, r *http.Request)   { a.deadLetters(w, r, "drop") }

func (a *api) deadLetters(w http.ResponseWriter, r *http.Request, op string) {
	var ids IDs
	if r.ContentLength != 0 {
		if err := decode(w, r, &ids); err != nil {
			fail(w, err)
			return
		}
	}
	comp := r.PathValue("component")
	ctx, cancel := storeContext(r)
	defer cancel()
	var n int
	var err error
	if op == "replay" {
		n, err = a.d.Queue.Replay(ctx, comp, ids.IDs)
	} else {
		n, err = a.d.Queue.Drop(ctx, comp, ids.IDs)
	}
	if err != nil {
		fail(w, fmt.Errorf("queue %s %s: %w", op, comp, err))
		return
	}
	a.d.Log.Info().Str("component", comp).Int("count", n).Str("op", op).Msg("admin: dead letters")
	writeJSON(w, http.StatusOK, Count{Count: n})
}
