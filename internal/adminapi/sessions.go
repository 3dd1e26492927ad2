package adminapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
)

// SessionPage is one page of GET /v1/admin/sessions.
type SessionPage struct {
	Sessions []string `json:"sessions"`       // full JIDs bound on this node, sorted
	Next     string   `json:"next,omitempty"` // pass as after= for the next page; empty on the last
	Total    int      `json:"total"`
}

func (a *api) listSessions(w http.ResponseWriter, r *http.Request) {
	limit, err := pageLimit(r.URL.Query().Get("limit"))
	if err != nil {
		fail(w, err)
		return
	}
	var all []string
	if a.d.Sessions != nil {
		all = a.d.Sessions()
	}
	sort.Strings(all)
	after := r.URL.Query().Get("after")
	start := sort.SearchStrings(all, after)
	if after != "" && start < len(all) && all[start] == after {
		start++
	}
	page := SessionPage{Sessions: append([]string{}, all[start:min(start+limit, len(all))]...), Total: len(all)}
	if start+limit < len(all) {
		page.Next = page.Sessions[len(page.Sessions)-1]
	}
	writeJSON(w, http.StatusOK, page)
}

func (a *api) kickSession(w http.ResponseWriter, r *http.Request) {
	full := r.PathValue("jid")
	if a.d.Kick == nil || !a.d.Kick(full) {
		writeJSON(w, http.StatusNotFound, errorBody{Error: fmt.Sprintf("no session %s on this node", full)})
		return
	}
	a.d.Log.Info().Str("jid", full).Msg("admin: session kicked")
	writeJSON(w, http.StatusOK, map[string]string{"kicked": full})
}

// pageLimit parses a limit= (default 100, at most MaxPage).
func pageLimit(s string) (int, error) {
	if s == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, badRequest("limit %q: want a positive number", s)
	}
	return min(n, MaxPage), nil
}

// Sessions returns every session bound on the node, page by page.
func (c *Client) Sessions(ctx context.Context) ([]string, error) {
	var all []string
	after := ""
	for {
		q := url.Values{"limit": {strconv.Itoa(MaxPage)}}
		if after != "" {
			q.Set("after", after)
		}
		var page SessionPage
		if err := c.call(ctx, http.MethodGet, "/v1/admin/sessions?"+q.Encode(), nil, "", &page); err != nil {
			return nil, err
		}
		all = append(all, page.Sessions...)
		if page.Next == "" {
			return all, nil
		}
		after = page.Next
	}
}

// Kick ends a session on the node (storage.ErrNotFound when there is
// none).
func (c *Client) Kick(ctx context.Context, full string) error {
	return c.call(ctx, http.MethodDelete, "/v1/admin/sessions/"+url.PathEscape(full), nil, "", nil)
}
