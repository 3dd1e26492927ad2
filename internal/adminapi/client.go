package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"xcollect.dev/xcollect/storage"
)

// Client calls a node's admin API. Its user methods make it a
// storage.UserStore (but GetCredentials, which the API does not offer).
type Client struct {
	base  string // "http://host:port"
	token string // bearer token; "" on the socket
	hc    *http.Client
}

var _ storage.UserStore = (*Client)(nil)

// DialSocket returns a client of the node serving the admin socket at
// path, or an error when none answers there.
func DialSocket(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	conn.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{base: "http://node", hc: &http.Client{Transport: tr, Timeout: importTimeout}}, nil
}

// NewHTTPClient returns a client of the admin API at base
// ("http://127.0.0.1:5280") with the admin token.
func NewHTTPClient(base, token string) *Client {
	return &Client{base: base, token: token, hc: &http.Client{Timeout: importTimeout}}
}

// call sends body (JSON-encoded unless it is an io.Reader) and decodes
// the answer into out. API errors come back as storage.ErrExists,
// storage.ErrNotFound or an error with the API's message.
func (c *Client) call(ctx context.Context, method, path string, body any, contentType string, out any) error {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd = b
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("admin api: encode request: %w", err)
		}
		rd, contentType = bytes.NewReader(data), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("admin api: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin api %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		if out == nil {
			return nil
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("admin api %s %s: decode answer: %w", method, path, err)
		}
		return nil
	}
	var eb errorBody
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(raw, &eb) != nil || eb.Error == "" {
		eb.Error = string(bytes.TrimSpace(raw))
	}
	switch resp.StatusCode {
	case http.StatusConflict:
		return fmt.Errorf("%w: %s", storage.ErrExists, eb.Error)
	case http.StatusNotFound:
		return fmt.Errorf("%w: %s", storage.ErrNotFound, eb.Error)
	}
	return fmt.Errorf("admin api %s %s: %s: %s", method, path, resp.Status, eb.Error)
}

// CreateUser adds an account with credentials hashed by the caller.
func (c *Client) CreateUser(ctx context.Context, user string, cred storage.Credentials) error {
	return c.call(ctx, http.MethodPost, "/v1/admin/users", UserRequest{JID: user, Credentials: &cred}, "", nil)
}

// SetCredentials changes an account's password.
func (c *Client) SetCredentials(ctx context.Context, user string, cred storage.Credentials) error {
	return c.call(ctx, http.MethodPut, "/v1/admin/users/"+url.PathEscape(user)+"/password", UserRequest{Credentials: &cred}, "", nil)
}

// DeleteUser removes an account.
func (c *Client) DeleteUser(ctx context.Context, user string) error {
	return c.call(ctx, http.MethodDelete, "/v1/admin/users/"+url.PathEscape(user), nil, "", nil)
}

// ListUsers returns every account of domain, page by page.
func (c *Client) ListUsers(ctx context.Context, domain string) ([]string, error) {
	var all []string
	after := ""
	for {
		q := url.Values{"domain": {domain}, "limit": {strconv.Itoa(MaxPage)}}
		if after != "" {
			q.Set("after", after)
		}
		var page UserPage
		if err := c.call(ctx, http.MethodGet, "/v1/admin/users?"+q.Encode(), nil, "", &page); err != nil {
			return nil, err
		}
		all = append(all, page.Users...)
		if page.Next == "" {
			return all, nil
		}
		after = page.Next
	}
}

// GetCredentials is not offered by the API.
func (c *Client) GetCredentials(context.Context, string) (storage.Credentials, error) {
	return storage.Credentials{}, errors.New("admin api: credentials are not readable")
}

// ImportUsers sends an import body (JSON lines, or CSV when csv is true).
func (c *Client) ImportUsers(ctx context.Context, body io.Reader, csv bool) (ImportResult, error) {
	ct := "application/jsonl"
	if csv {
		ct = "text/csv"
	}
	var res ImportResult
	err := c.call(ctx, http.MethodPost, "/v1/admin/users/import", body, ct, &res)
	return res, err
}

// QueueStats returns the statistics of component's queue (all when "").
func (c *Client) QueueStats(ctx context.Context, component string) ([]QueueStats, error) {
	var out []QueueStats
	err := c.call(ctx, http.MethodGet, "/v1/admin/queues?"+url.Values{"component": {component}}.Encode(), nil, "", &out)
	return out, err
}

// QueueList returns up to limit rows (dead letters when dead) of component.
func (c *Client) QueueList(ctx context.Context, component string, dead bool, limit int) ([]Row, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if dead {
		q.Set("dead", "1")
	}
	var out []Row
	err := c.call(ctx, http.MethodGet, "/v1/admin/queues/"+url.PathEscape(component)+"?"+q.Encode(), nil, "", &out)
	return out, err
}

// QueueReplay moves dead letters back to the queue (all when ids is empty).
func (c *Client) QueueReplay(ctx context.Context, component string, ids []int64) (int, error) {
	var n Count
	err := c.call(ctx, http.MethodPost, "/v1/admin/queues/"+url.PathEscape(component)+"/replay", IDs{IDs: ids}, "", &n)
	return n.Count, err
}

// QueueDrop deletes dead letters (all when ids is empty).
func (c *Client) QueueDrop(ctx context.Context, component string, ids []int64) (int, error) {
	var n Count
	err := c.call(ctx, http.MethodPost, "/v1/admin/queues/"+url.PathEscape(component)+"/drop", IDs{IDs: ids}, "", &n)
	return n.Count, err
}

// Components lists the configured components.
func (c *Client) Components(ctx context.Context) ([]Component, error) {
	var out []Component
	err := c.call(ctx, http.MethodGet, "/v1/admin/components", nil, "", &out)
	return out, err
}

// Members lists the cluster members.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var out []Member
	err := c.call(ctx, http.MethodGet, "/v1/admin/cluster/members", nil, "", &out)
	return out, err
}
