package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
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
