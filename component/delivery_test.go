package component_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"xcollect.dev/xcollect/component"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/internal/xmpptest"
)

func report(user string, seq int) string {
	return fmt.Sprintf("<message to='%s' id='%s-%d'><report xmlns='urn:x:report' seq='%d'>temperature=21.5</report></message>", compA, user, seq, seq)
}

// sendReports sends n reports from each client with XEP-0198 enabled and
// waits until the server's <a h/> covers them all.
func sendReports(t *testing.T, clients map[string]*xmpptest.Conn, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for user, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b strings.Builder
			for i := range n {
				b.WriteString(report(user, i))
				if i%50 == 49 || i == n-1 {
					if err := c.Send(b.String()); err != nil {
						errs <- err
						return
					}
					b.Reset()
				}
			}
			if err := c.RequestAck(); err != nil {
				errs <- err
				return
			}
			if err := c.WaitAck(uint32(n), 60*time.Second); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// recv records what a component received: per sender the report seqs in
// arrival order.
type recv struct {
	seqs  map[string][]int
	total int
}

func (r *recv) add(t *testing.T, el *wire.Element) bool {
	if el.Name.Local != "message" {
		return false
	}
	from, id := el.Get("from"), el.Get("id")
	i := strings.LastIndexByte(id, '-')
	seq, err := strconv.Atoi(id[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("unexpected stanza %s", el.Raw)
	}
	user := from[:strings.IndexByte(from, '@')]
	if r.seqs == nil {
		r.seqs = map[string][]int{}
	}
	r.seqs[user] = append(r.seqs[user], seq)
	r.total++
	return true
}

func TestTenThousandReports(t *testing.T) {
	const clients, per = 20, 500
	e := startEnv(t, envOpts{sync: true, quiet: true})
	comp := e.component(compA)
	if err := comp.EnableSM(false); err != nil {
		t.Fatal(err)
	}
	conns := map[string]*xmpptest.Conn{}
	for i := range clients {
		u := fmt.Sprintf("dev%02d", i)
		e.user(u)
		c := e.login(u, "r")
		if err := c.EnableSM(false); err != nil {
			t.Fatal(err)
		}
		conns[u] = c
	}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sendReports(t, conns, per)
	}()
	var r recv
	deadline := time.Now().Add(120 * time.Second)
	for r.total < clients*per {
		el, err := comp.Next(time.Until(deadline))
		if err != nil {
			t.Fatalf("after %d reports: %v", r.total, err)
		}
		r.add(t, el)
	}
	elapsed := time.Since(start)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("clients not acknowledged")
	}
	t.Logf("%d reports from %d clients delivered in %s: %.0f reports/s (fsync commits)", r.total, clients, elapsed, float64(r.total)/elapsed.Seconds())
	for u, seqs := range r.seqs {
		if len(seqs) != per {
			t.Errorf("%s: %d reports, want %d", u, len(seqs), per)
		}
		for i, s := range seqs {
			if s != i {
				t.Fatalf("%s: report %d has seq %d: order or exactly-once broken", u, i, s)
			}
		}
	}
	// The component acks everything; the queue drains.
	if err := comp.RequestAck(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, wait, "queue drained", func() bool {
		st, err := e.store.Queue().Stats(context.Background(), compA)
		return err == nil && (len(st) == 0 || st[0].Rows == 0)
	})
}

func TestReconnectRedeliversUnacked(t *testing.T) {
	const per = 500
	e := startEnv(t, envOpts{quiet: true})
	conns := map[string]*xmpptest.Conn{}
	for _, u := range []string{"ra", "rb"} {
		e.user(u)
		c := e.login(u, "r")
		if err := c.EnableSM(false); err != nil {
			t.Fatal(err)
		}
		conns[u] = c
	}
	sendReports(t, conns, per) // all acked by the server: durable

	comp := e.component(compA)
	comp.SetAutoAck(false)
	if err := comp.EnableSM(false); err != nil {
		t.Fatal(err)
	}
	var first recv
	const read, acked = 300, 200
	ackedSet := map[string]bool{}
	for first.total < read {
		el, err := comp.Next(wait)
		if err != nil {
			t.Fatal(err)
		}
		if first.add(t, el) && first.total <= acked {
			ackedSet[el.Get("id")] = true
		}
	}
	if err := comp.Ack(acked); err != nil {
		t.Fatal(err)
	}
	// The crash comes after the node has taken the ack (its rows are gone
	// from the queue): an ack still in flight when the connection drops is
	// rightly never applied, and its rows are redelivered.
	testutil.WaitFor(t, wait, "the acked rows deleted", func() bool {
		st, err := e.store.Queue().Stats(context.Background(), compA)
		return err == nil && len(st) == 1 && st[0].Rows <= 2*per-acked
	})
	comp.Drop() // crash: no </stream:stream>

	var second recv
	seen := map[string]int{}
	var comp2 *xmpptest.Conn
	testutil.WaitFor(t, wait, "reconnect", func() bool {
		c, err := xmpptest.TryDialComponent(e.comp, compA, secret)
		if err != nil {
			return false
		}
		comp2 = c
		return true
	})
	defer comp2.Close()
	if err := comp2.EnableSM(false); err != nil {
		t.Fatal(err)
	}
	for len(seen) < 2*per-acked {
		el, err := comp2.Next(wait)
		if err != nil {
			t.Fatalf("after %d distinct: %v", len(seen), err)
		}
		if !second.add(t, el) {
			continue
		}
		id := el.Get("id")
		if ackedSet[id] {
			t.Fatalf("acked report %s delivered again", id)
		}
		seen[id]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s delivered %d times on the second connection", id, n)
		}
	}
	// Every report arrived at least once, each sender in order on the
	// second connection.
	for u, seqs := range second.seqs {
		for i := 1; i < len(seqs); i++ {
			if seqs[i] <= seqs[i-1] {
				t.Fatalf("%s: order broken: %v", u, seqs[max(0, i-3):i+1])
			}
		}
	}
	for _, u := range []string{"ra", "rb"} {
		for i := range per {
			id := fmt.Sprintf("%s-%d", u, i)
			if !ackedSet[id] && seen[id] == 0 {
				t.Fatalf("report %s lost", id)
			}
		}
	}
	t.Logf("first connection: %d read, %d acked; second: %d delivered (%d redelivered)", read, acked, second.total, read-acked)
}

func TestMultiConnectionsShareQueue(t *testing.T) {
	const senders, per = 6, 100
	e := startEnv(t, envOpts{quiet: true, specs: []component.Spec{{JID: compA, Secret: secret, Multi: true}}})
	a := e.component(compA)
	b := e.component(compA)
	conns := map[string]*xmpptest.Conn{}
	for i := range senders {
		u := fmt.Sprintf("m%d", i)
		e.user(u)
		c := e.login(u, "r")
		if err := c.EnableSM(false); err != nil {
			t.Fatal(err)
		}
		conns[u] = c
	}
	sendReports(t, conns, per)
	var ra, rb recv
	deadline := time.Now().Add(30 * time.Second)
	for ra.total+rb.total < senders*per && time.Now().Before(deadline) {
		for _, x := range []struct {
			c *xmpptest.Conn
			r *recv
		}{{a, &ra}, {b, &rb}} {
			if el, err := x.c.Next(20 * time.Millisecond); err == nil {
				x.r.add(t, el)
			}
		}
	}
	if got := ra.total + rb.total; got != senders*per {
		t.Fatalf("delivered %d, want %d", got, senders*per)
	}
	for _, r := range []*recv{&ra, &rb} {
		for u, seqs := range r.seqs {
			for i := 1; i < len(seqs); i++ {
				if seqs[i] <= seqs[i-1] {
					t.Fatalf("%s: order broken", u)
				}
			}
		}
	}
	t.Logf("connection a got %d, b got %d", ra.total, rb.total)
}
