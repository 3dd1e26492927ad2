// Package adminapi is the node's administration API: JSON over HTTP under
// /v1/admin/. The node serves the same handler on its HTTP port (behind the
// admin token, see internal/httpapi) and on its admin socket (a Unix socket
// in the data directory, mode 0600, see internal/adminsock), which is what
// the `xcollect user|queue|component|cluster` commands use while a node
// runs on this host. Client is the Go side of the API.
//
// Endpoints:
//
//	GET    /v1/admin/users?domain=D&after=JID&limit=N  accounts of D in order, one page; "next" is the cursor
//	POST   /v1/admin/users                             {"jid", "password"} or {"jid", "credentials"}
//	PUT    /v1/admin/users/{jid}/password              {"password"} or {"credentials"}
//	DELETE /v1/admin/users/{jid}
//	POST   /v1/admin/users/import                      JSON lines {"jid","password"} or CSV jid,password (Content-Type text/csv)
//	GET    /v1/admin/queues[?component=C]              queue statistics
//	GET    /v1/admin/queues/{component}?dead=1&limit=N rows (or dead letters)
//	POST   /v1/admin/queues/{component}/replay         {"ids": [...]} (all dead letters when empty)
//	POST   /v1/admin/queues/{component}/drop           {"ids": [...]} (all dead letters when empty)
//	GET    /v1/admin/sessions?after=JID&limit=N        full JIDs bound on this node, one page
//	DELETE /v1/admin/sessions/{jid}                    end that session (policy-violation, no resumption)
//	GET    /v1/admin/components                        configured components and their connections here
//	GET    /v1/admin/cluster/members                   cluster members as this node sees them
//
// Errors are {"error": "..."} with 400 (bad request), 404 (no such
// account or component), 409 (account exists) or 500.
package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/storage"
)

// Component is one configured component.
type Component struct {
	JID         string `json:"jid"`
	Connections int    `json:"connections"` // live processor connections on this node
}

// Member is one cluster member.
type Member struct {
	Name     string  `json:"node"`
	Alive    bool    `json:"alive"`
	Sessions int     `json:"sessions"`
	Score    float64 `json:"score"`
}

// Deps are what the API administers. Components and Members may be nil
// (the endpoints then answer an empty list).
type Deps struct {
	Users      storage.UserStore
	Queue      storage.QueueStore
	Domains    []string // served domains: accounts outside them are refused
	Components func() []Component
	Members    func() []Member
	// Sessions lists the full JIDs bound on this node; Kick ends one and
	// reports whether it existed. Nil: no sessions.
	Sessions func() []string
	Kick     func(full string) bool
	Log      zerolog.Logger
}

// MaxPage is the largest page of GET /v1/admin/users.
const MaxPage = 1000

// Handler returns the API's handler; it answers paths under /v1/admin/.
func Handler(d Deps) http.Handler {
	a := &api{d: d}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/admin/users", a.listUsers)
	mux.HandleFunc("POST /v1/admin/users", a.addUser)
	mux.HandleFunc("POST /v1/admin/users/import", a.importUsers)
	mux.HandleFunc("PUT /v1/admin/users/{jid}/password", a.setPassword)
	mux.HandleFunc("DELETE /v1/admin/users/{jid}", a.deleteUser)
	mux.HandleFunc("GET /v1/admin/queues", a.queueStats)
	mux.HandleFunc("GET /v1/admin/queues/{component}", a.queueList)
	mux.HandleFunc("POST /v1/admin/queues/{component}/replay", a.queueReplay)
	mux.HandleFunc("POST /v1/admin/queues/{component}/drop", a.queueDrop)
	mux.HandleFunc("GET /v1/admin/sessions", a.listSessions)
	mux.HandleFunc("DELETE /v1/admin/sessions/{jid}", a.kickSession)
	mux.HandleFunc("GET /v1/admin/components", a.components)
	mux.HandleFunc("GET /v1/admin/cluster/members", a.members)
	return mux
}

type api struct{ d Deps }

// errBadRequest marks a client mistake (400).
var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // a failed write means the client left
}

// fail answers err with its status.
func fail(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, errBadRequest):
		status = http.StatusBadRequest
	case errors.Is(err, storage.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, storage.ErrExists):
		status = http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, errorBody{Error: err.Error()})
}

type errorBody struct {
	Error string `json:"error"`
}

// decode reads a JSON body of at most 1 MiB into v.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(v); err != nil {
		return badRequest("body: %v", err)
	}
	return nil
}

// storeTimeout bounds one request's store calls (an import has its own).
const storeTimeout = 30 * time.Second

func storeContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), storeTimeout)
}

func (a *api) components(w http.ResponseWriter, r *http.Request) {
	out := []Component{}
	if a.d.Components != nil {
		out = append(out, a.d.Components()...)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) members(w http.ResponseWriter, r *http.Request) {
	out := []Member{}
	if a.d.Members != nil {
		out = append(out, a.d.Members()...)
	}
	writeJSON(w, http.StatusOK, out)
}

// served reports whether domain is one of the node's.
func (a *api) served(domain string) bool {
	for _, d := range a.d.Domains {
		if strings.EqualFold(d, domain) {
			return true
		}
	}
	return false
}
