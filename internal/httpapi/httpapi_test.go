package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestConnectAndHealth(t *testing.T) {
	healthy := true
	d := Deps{
		Self: func() Node { return Node{Name: "n1", C2S: "10.0.0.1:5222", Sessions: 10} },
		Health: func(context.Context) error {
			if healthy {
				return nil
			}
			return errors.New("down")
		},
	}
	srv := httptest.NewServer(Handler(d))
	defer srv.Close()
	get := func(path string) (*http.Response, map[string]any) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp, m
	}
	if resp, _ := get("/healthz"); resp.StatusCode != 200 {
		t.Fatalf("healthz = %d", resp.StatusCode)
	}
	healthy = false
	if resp, _ := get("/healthz"); resp.StatusCode != 503 {
		t.Fatalf("healthz while down = %d", resp.StatusCode)
	}
	if _, m := get("/v1/connect"); m["c2s"] != "10.0.0.1:5222" {
		t.Fatalf("connect (single node) = %v", m)
	}
	d.Best = func() (Node, bool) { return Node{Name: "n2", C2S: "10.0.0.2:5222"}, true }
	srv2 := httptest.NewServer(Handler(d))
	defer srv2.Close()
	resp, err := http.Get(srv2.URL + "/v1/connect")
	if err != nil {
		t.Fatal(err)
	}
	var n Node
	_ = json.NewDecoder(resp.Body).Decode(&n)
	resp.Body.Close()
	if n.Name != "n2" || n.C2S != "10.0.0.2:5222" {
		t.Fatalf("connect (cluster) = %+v", n)
	}
}

func TestConnectFillsWildcardHost(t *testing.T) {
	n := withHost(Node{C2S: ":5222", C2STLS: "0.0.0.0:5223", Component: "10.0.0.9:5347"}, "xmpp.example.com:5280")
	if n.C2S != "xmpp.example.com:5222" || n.C2STLS != "xmpp.example.com:5223" || n.Component != "10.0.0.9:5347" {
		t.Fatalf("got %+v", n)
	}
}

// /healthz says ok or not ok; the store's error (addresses, users) stays
// in the log.
func TestHealthzShowsNoInternals(t *testing.T) {
	var logged error
	d := Deps{
		Self: func() Node { return Node{Name: "n1"} },
		Health: func(context.Context) error {
			return errors.New("dial tcp 10.1.2.3:5432: password authentication failed for user xcollect")
		},
		HealthFailed: func(err error) { logged = err },
	}
	srv := httptest.NewServer(Handler(d))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || strings.TrimSpace(string(body)) != "not ok" {
		t.Fatalf("healthz while the store fails = %d %q; want 503 \"not ok\"", resp.StatusCode, body)
	}
	if logged == nil {
		t.Fatal("the store error was not handed to the log")
	}
}

// /v1/status shows addresses only with the admin token; without a
// configured token it is not served at all.
func TestStatusNeedsAdminToken(t *testing.T) {
	const token = "0123456789abcdef0123"
	d := Deps{
		Self:   func() Node { return Node{Name: "n1", C2S: "10.0.0.1:5222", Component: "10.0.0.1:5347"} },
		Health: func(context.Context) error { return nil },
		Nodes:  func() []Node { return []Node{{Name: "n2", C2S: "10.0.0.2:5222"}} },
		Pprof:  true,
	}
	get := func(h http.Handler, path, auth string) (int, string) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	noAddr := func(name string, code int, body string) {
		t.Helper()
		if code == 200 || strings.Contains(body, "10.0.0.") {
			t.Fatalf("%s: %d %q; want no details", name, code, body)
		}
	}
	code, body := get(Handler(d), "/v1/status", "")
	noAddr("no token configured", code, body)
	code, body = get(Handler(d), "/debug/pprof/cmdline", "")
	noAddr("pprof without a token configured", code, body)
	d.AdminToken = token
	code, body = get(Handler(d), "/v1/status", "")
	noAddr("no Authorization", code, body)
	code, body = get(Handler(d), "/v1/status", "Bearer "+token+"x")
	noAddr("wrong token", code, body)
	code, body = get(Handler(d), "/v1/status", "Bearer "+token)
	if code != 200 || !strings.Contains(body, "10.0.0.2:5222") {
		t.Fatalf("with the token: %d %q", code, body)
	}
}

// serve runs NewServer on a loopback listener until the test ends.
func serve(t *testing.T, l Limits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := Deps{Self: func() Node { return Node{Name: "n1"} }, Health: func(context.Context) error { return nil }}
	hs, lln := NewServer(Handler(d), ln, l)
	ctx, cancel := context.WithCancel(context.Background())
	done := ServeUntil(ctx, hs, lln, func(err error) { t.Error(err) }, nil)
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// keepAlive sends one keep-alive request on a new connection and reads the
// answer; the connection stays open.
func keepAlive(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return c
}

// An idle keep-alive connection is closed after IdleTimeout.
func TestIdleKeepAliveClosed(t *testing.T) {
	addr := serve(t, Limits{IdleTimeout: 300 * time.Millisecond})
	c := keepAlive(t, addr)
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err != io.EOF {
		t.Fatalf("idle keep-alive connection: read %v after %v; want EOF (closed by the server)", err, time.Since(start))
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("closed after %v; want about 300ms", took)
	}
}

// The default limits close idle connections and bound requests.
func TestDefaultLimitsAreSet(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hs, _ := NewServer(http.NotFoundHandler(), ln, Limits{})
	if hs.IdleTimeout <= 0 || hs.ReadHeaderTimeout <= 0 || hs.ReadTimeout <= 0 || hs.WriteTimeout <= 0 || hs.MaxHeaderBytes <= 0 {
		t.Fatalf("server without limits: %+v", hs)
	}
}

// Beyond MaxConns a new connection is not served until one closes.
func TestConnectionCap(t *testing.T) {
	addr := serve(t, Limits{MaxConns: 2, IdleTimeout: time.Minute})
	a := keepAlive(t, addr)
	keepAlive(t, addr)
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _ := c.Read(make([]byte, 1)); n > 0 {
		t.Fatal("a third connection was served with MaxConns 2")
	}
	a.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	resp.Body.Close()
}

// /readyz is ready only when the store answers and the node is part of
// its cluster; it says nothing more.
func TestReadyz(t *testing.T) {
	var storeErr, clusterErr error
	d := Deps{
		Self:   func() Node { return Node{Name: "n1"} },
		Health: func(context.Context) error { return storeErr },
		Ready:  func() error { return clusterErr },
	}
	srv := httptest.NewServer(Handler(d))
	defer srv.Close()
	get := func() (int, string) {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	if code, body := get(); code != 200 || body != "ready" {
		t.Fatalf("healthy, joined: %d %q", code, body)
	}
	clusterErr = errors.New("cluster not joined yet")
	if code, body := get(); code != 503 || body != "not ready" {
		t.Fatalf("not joined: %d %q", code, body)
	}
	clusterErr, storeErr = nil, errors.New("connection refused")
	if code, body := get(); code != 503 || body != "not ready" {
		t.Fatalf("store down: %d %q", code, body)
	}
}
