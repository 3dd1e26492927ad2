package clustertest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/xmpptest"
)

// collector records the ids of reports a processor received.
type collector struct {
	mu    sync.Mutex
	got   map[string]int       // ids of the test devices ("k-…")
	first map[string]time.Time // when each of those first arrived
	all   map[string]int       // every stanza id
	stop  chan struct{}
	done  chan struct{}
}

func collect(t *testing.T, c *xmpptest.Conn) *collector {
	col := &collector{got: map[string]int{}, first: map[string]time.Time{}, all: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(col.done)
		for {
			select {
			case <-col.stop:
				return
			default:
			}
			el, err := c.Next(200 * time.Millisecond)
			if err != nil {
				if c.Err(0) != nil {
					return
				}
				continue
			}
			id := el.Get("id")
			col.mu.Lock()
			col.all[id]++
			col.mu.Unlock()
			if strings.HasPrefix(id, "k-") {
				col.mu.Lock()
				if col.got[id] == 0 {
					col.first[id] = time.Now()
				}
				col.got[id]++
				col.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { close(col.stop); <-col.done })
	return col
}

func (c *collector) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[id] > 0
}

// device sends reports with SM and remembers which were acked; after a
// broken connection it reconnects to the next address and resends what was
// not acked (the server's dedupe makes that harmless).
type device struct {
	user    string
	mu      sync.Mutex
	acked   []string
	pending []string // sent on the current connection or waiting, not acked
	next    int
}

// newDevices registers n accounts dev0… and returns their devices.
func newDevices(t *testing.T, dsn string, n int) []*device {
	t.Helper()
	var devs []*device
	var users []string
	for i := 0; i < n; i++ {
		u := fmt.Sprintf("dev%d", i)
		users = append(users, u)
		devs = append(devs, &device{user: u})
	}
	addUsers(t, dsn, users...)
	return devs
}

func (d *device) run(t *testing.T, addrs []string, until time.Time, max int) {
	ai := 0
	for time.Now().Before(until) {
		c, err := xmpptest.TryDialC2S(addrs[ai%len(addrs)], "example.com", d.user, "pw", xmpptest.C2SOptions{})
		if err != nil {
			ai++
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err := c.EnableSM(false); err != nil {
			c.Close()
			ai++
			continue
		}
		d.session(c, until, max)
		c.Close()
		ai++
	}
}

// session sends on one connection until it breaks or time is up.
func (d *device) session(c *xmpptest.Conn, until time.Time, max int) {
	d.mu.Lock()
	onConn := append([]string(nil), d.pending...) // the i-th stanza on this connection
	d.mu.Unlock()
	send := func(id string) bool {
		return c.Send(fmt.Sprintf("<message to='collector.example.com' id='%s'><report xmlns='urn:example:r'>%s</report></message>", id, id)) == nil
	}
	for _, id := range onConn {
		if !send(id) {
			return
		}
	}
	var h uint32
	for time.Now().Before(until) {
		d.mu.Lock()
		if len(d.pending) < 20 && d.next < max {
			id := fmt.Sprintf("k-%s-%d", d.user, d.next)
			d.next++
			d.pending = append(d.pending, id)
			onConn = append(onConn, id)
			d.mu.Unlock()
			if !send(id) {
				return
			}
			continue
		}
		d.mu.Unlock()
		if c.RequestAck() != nil {
			return
		}
		_ = c.WaitAck(h+1, 500*time.Millisecond)
		if c.Err(0) != nil {
			return
		}
		if a, ok := c.Acked(); ok && a > h {
			d.mu.Lock()
			for _, id := range onConn[h:a] {
				d.acked = append(d.acked, id)
				d.pending = d.pending[1:]
			}
			d.mu.Unlock()
			h = a
		}
		d.mu.Lock()
		finished := d.next >= max && len(d.pending) == 0
		d.mu.Unlock()
		if finished {
			return
		}
	}
}

// adminToken unlocks the nodes' /v1/status (XCOLLECT_ADMIN_TOKEN).
const adminToken = "clustertest-admin-token"

func status(t *testing.T, httpAddr string) (directory int, members int) {
	req, err := http.NewRequest("GET", "http://"+httpAddr+"/v1/status", nil)
	if err != nil {
		return -1, -1
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1, -1
	}
	defer resp.Body.Close()
	var st struct {
		Directory int               `json:"directory"`
		Members   []json.RawMessage `json:"members"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return -1, -1
	}
	return st.Directory, len(st.Members)
}

// TestKillNodeUnderLoad SIGKILLs a node while its clients report: they
// reconnect to the other nodes, and every report whose ack a client
// received reaches the processor. The dead node's sessions leave the other
// nodes' directories within the failure detection time.
func TestKillNodeUnderLoad(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.DSN()
	nodes := startCluster(t, dsn, "1000")
	devs := newDevices(t, dsn, 6)
	proc := xmpptest.DialComponent(t, nodes[0].comp, "collector.example.com", "s3cret")
	if err := proc.EnableSM(false); err != nil {
		t.Fatal(err)
	}
	col := collect(t, proc)

	until := time.Now().Add(12 * time.Second)
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func(d *device) {
			defer wg.Done()
			// start on node2 (the victim), fail over to node3, then node1
			d.run(t, []string{nodes[1].c2s, nodes[2].c2s, nodes[0].c2s}, until, 400)
		}(d)
	}
	// let the load run, then kill node2 (every device starts there)
	testutil.WaitFor(t, 10*time.Second, "sessions on node2 in node1's directory", func() bool {
		n, _ := status(t, nodes[0].http)
		return n >= len(devs)
	})
	time.Sleep(time.Duration(500+rand.IntN(500)) * time.Millisecond)
	killed := time.Now()
	if err := nodes[1].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// node2's sessions disappear from node1's directory; the devices'
	// new sessions on node3 remain.
	testutil.WaitFor(t, 15*time.Second, "node2 removed from node1's membership", func() bool {
		_, m := status(t, nodes[0].http)
		return m == 2
	})
	t.Logf("node2 declared dead %v after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	wg.Wait()

	acked := waitAckedDelivered(t, 20*time.Second, devs, col)
	col.mu.Lock()
	received, dups := len(col.got), 0
	for _, n := range col.got {
		dups += n - 1
	}
	col.mu.Unlock()
	t.Logf("acked %d, received %d distinct (%d duplicates), acked-but-lost 0", acked, received, dups)
}

// waitAckedDelivered waits up to d until every report a device got an ack
// for is at one of the collectors (the test fails with the missing ones
// otherwise) and returns how many were acked; too few acks mean the load
// did not run, which fails the test too.
func waitAckedDelivered(t *testing.T, d time.Duration, devs []*device, cols ...*collector) int {
	t.Helper()
	var acked, lost []string
	for _, dv := range devs {
		dv.mu.Lock()
		acked = append(acked, dv.acked...)
		dv.mu.Unlock()
	}
	if len(acked) < 100 {
		t.Fatalf("only %d reports acked: the load did not run", len(acked))
	}
	ok := false
	deadline := time.Now().Add(d)
	for !ok && time.Now().Before(deadline) {
		lost = lost[:0]
		for _, id := range acked {
			at := false
			for _, c := range cols {
				at = at || c.has(id)
			}
			if !at {
				lost = append(lost, id)
			}
		}
		ok = len(lost) == 0
		if !ok {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !ok {
		t.Fatalf("acked-but-lost %d of %d after %v, e.g. %v", len(lost), len(acked), d, lost[:min(5, len(lost))])
	}
	return len(acked)
}
