// Package dashboard serves the live dashboard at /ui/: static files
// embedded in the binary (no CDN, no build step) and /ui/events, a
// Server-Sent Events stream of the node's numbers once a second.
//
// Access: the page itself holds no data and is served to anyone who
// reaches the HTTP port; /ui/events needs the admin token (mounted behind
// it by internal/httpapi). The page asks for the token once, keeps it in
// sessionStorage (gone with the tab) and sends it as an Authorization
// header on a streaming fetch (EventSource cannot send headers). For
// automation the page also takes it from the URL fragment (#token=…),
// which browsers never send to the server, and removes it from the
// address bar at once.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

//go:embed static
var static embed.FS

// Component is one component's queue and processors.
type Component struct {
	JID            string  `json:"jid"`
	Rows           int64   `json:"rows"`
	Bytes          int64   `json:"bytes"`
	OldestSeconds  float64 `json:"oldest_seconds"`
	DeadLetters    int64   `json:"dead_letters"`
	Connections    int     `json:"connections"`
	LeasedSenders  int64   `json:"leased_senders"`
	WaitingSenders int64   `json:"waiting_senders"`
}

// Member is one cluster node and its load.
type Member struct {
	Name     string  `json:"node"`
	Alive    bool    `json:"alive"`
	Sessions int     `json:"sessions"`
	Score    float64 `json:"score"`
}

// Snapshot is what one event carries.
type Snapshot struct {
	Node         string        `json:"node"`
	Time         time.Time     `json:"time"`
	Sessions     int64         `json:"sessions"`
	StanzasIn    int64         `json:"stanzas_in"`  // counters: the page shows their rate
	StanzasOut   int64         `json:"stanzas_out"` //
	AuthFailures int64         `json:"auth_failures"`
	Components   []Component   `json:"components"`
	Members      []Member      `json:"members"`
	Errors       []RecentError `json:"errors"`
	QueueError   string        `json:"queue_error,omitempty"` // reading the queue statistics failed
}

// Source takes a snapshot; ctx bounds its store reads.
type Source func(ctx context.Context) Snapshot

// Config configures the handlers.
type Config struct {
	Source Source
	// Interval between events; default 1 s.
	Interval time.Duration
	// MaxStreams bounds concurrent event streams (each holds an HTTP
	// connection); default 16.
	MaxStreams int
	// MaxStreamAge closes a stream after this long (the page reconnects);
	// default 10 min.
	MaxStreamAge time.Duration
	Log          zerolog.Logger
}

// Handlers returns the static files (serve at /ui/) and the event stream
// (serve at /ui/events, behind the admin token). Streams end when ctx
// ends (node shutdown) or the client leaves.
func Handlers(ctx context.Context, c Config) (files, events http.Handler) {
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = 16
	}
	if c.MaxStreamAge <= 0 {
		c.MaxStreamAge = 10 * time.Minute
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files = http.StripPrefix("/ui/", http.FileServerFS(sub))
	s := &streams{c: c, ctx: ctx, slots: make(chan struct{}, c.MaxStreams)}
	return files, http.HandlerFunc(s.serve)
}

type streams struct {
	c     Config
	ctx   context.Context
	slots chan struct{}
}

func (s *streams) serve(w http.ResponseWriter, r *http.Request) {
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		http.Error(w, "too many dashboard streams", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	// The HTTP port's write timeout is for ordinary answers; a stream
	// lives until MaxStreamAge.
	if err := rc.SetWriteDeadline(time.Now().Add(s.c.MaxStreamAge + 10*time.Second)); err != nil {
		http.Error(w, "streaming not supported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	ctx, cancel := context.WithTimeout(r.Context(), s.c.MaxStreamAge)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	tick := time.NewTicker(s.c.Interval)
	defer tick.Stop()
	for seq := 1; ; seq++ {
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		snap := s.c.Source(sctx)
		scancel()
		data, err := json.Marshal(snap)
		if err != nil {
			s.c.Log.Error().Err(err).Msg("dashboard: encode snapshot")
			return
		}
		if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", seq, data); err != nil {
			return // the client left
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// RecentError is one warning or error the node logged.
type RecentError struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
}

// Recent keeps the last warnings and errors of the node's log for the
// dashboard: a zerolog hook. Safe for concurrent use.
type Recent struct {
	mu   sync.Mutex
	ring []RecentError
	next int
	full bool
}

// NewRecent keeps the last n entries.
func NewRecent(n int) *Recent { return &Recent{ring: make([]RecentError, n)} }

// Run implements zerolog.Hook: warnings and worse are kept (the message
// only: fields may hold account names, the dashboard shows none).
func (r *Recent) Run(_ *zerolog.Event, level zerolog.Level, msg string) {
	if level < zerolog.WarnLevel || level == zerolog.NoLevel || len(r.ring) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ring[r.next] = RecentError{Time: time.Now().UTC(), Level: level.String(), Message: msg}
	r.next = (r.next + 1) % len(r.ring)
	r.full = r.full || r.next == 0
}

// List returns the kept entries, newest first.
func (r *Recent) List() []RecentError {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = len(r.ring)
	}
	out := make([]RecentError, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.ring[(r.next-i+len(r.ring))%len(r.ring)])
	}
	return out
}
