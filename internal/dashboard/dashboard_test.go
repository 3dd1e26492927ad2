package dashboard

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestRecentKeepsTheLastWarningsNewestFirst(t *testing.T) {
	r := NewRecent(3)
	log := zerolog.New(nil).Hook(r)
	log.Info().Msg("info is not kept")
	for _, m := range []string{"w1", "w2", "w3", "w4"} {
		log.Warn().Str("account", "alice@example.com").Msg(m)
	}
	log.Error().Msg("e5")
	got := r.List()
	var msgs []string
	for _, e := range got {
		msgs = append(msgs, e.Level+":"+e.Message)
		if strings.Contains(e.Message, "alice") {
			t.Fatal("a field reached the dashboard")
		}
	}
	if strings.Join(msgs, ",") != "error:e5,warn:w4,warn:w3" {
		t.Fatalf("recent = %v", msgs)
	}
}

// TestStreamsAreBoundedAndEndWithTheNode: beyond MaxStreams a stream is
// refused; every stream ends when the node's context ends.
func TestStreamsAreBoundedAndEndWithTheNode(t *testing.T) {
	node, stop := context.WithCancel(context.Background())
	_, events := Handlers(node, Config{Interval: 20 * time.Millisecond, MaxStreams: 1,
		Source: func(context.Context) Snapshot { return Snapshot{Node: "n1", Time: time.Now()} }})
	srv := httptest.NewServer(events)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	first, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Body.Close()
	sc := bufio.NewScanner(first.Body)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "data: ") {
	}
	if !strings.Contains(sc.Text(), `"node":"n1"`) {
		t.Fatalf("first event %q", sc.Text())
	}
	second, err := http.DefaultClient.Do(req.Clone(ctx))
	if err != nil {
		t.Fatal(err)
	}
	second.Body.Close()
	if second.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second stream: %d, want 503", second.StatusCode)
	}
	stop()
	ended := make(chan struct{})
	go func() { // owned by the test: waited for below
		defer close(ended)
		for sc.Scan() {
		}
	}()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not end with the node's context")
	}
}
