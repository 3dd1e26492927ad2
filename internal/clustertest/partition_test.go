package clustertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"xcollect.dev/xcollect/internal/pgtest"
	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/internal/xmpptest"
)

// netLab is a bridge in the root namespace with one network namespace per
// node behind a veth pair; the test makes and removes all of it.
type netLab struct {
	t      *testing.T
	prefix string // e.g. 10.201.37
	bridge string
	ns     []string
	veth   []string // root-side veth of each namespace
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func newNetLab(t *testing.T, n int) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the partition test makes network namespaces and needs root: run make test as root (CI does)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("ip (iproute2) is missing: run make test-deps (apt-get install -y iproute2)")
	}
	id := rand.IntN(200) + 20
	lab := &netLab{t: t, prefix: fmt.Sprintf("10.201.%d", id), bridge: fmt.Sprintf("xcbr%d", id)}
	t.Cleanup(lab.remove)
	ipCmd(t, "link", "add", lab.bridge, "type", "bridge")
	ipCmd(t, "addr", "add", lab.prefix+".1/24", "dev", lab.bridge)
	ipCmd(t, "link", "set", lab.bridge, "up")
	for i := 1; i <= n; i++ {
		ns := fmt.Sprintf("xcns%d-%d", id, i)
		veth := fmt.Sprintf("xcv%d-%d", id, i)
		lab.ns = append(lab.ns, ns)
		lab.veth = append(lab.veth, veth)
		ipCmd(t, "netns", "add", ns)
		ipCmd(t, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ipCmd(t, "link", "set", veth, "master", lab.bridge)
		ipCmd(t, "link", "set", veth, "up")
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
		ipCmd(t, "-n", ns, "addr", "add", lab.addr(i)+"/24", "dev", "eth0")
		ipCmd(t, "-n", ns, "link", "set", "eth0", "up")
		ipCmd(t, "-n", ns, "route", "add", "default", "via", lab.prefix+".1")
	}
	return lab
}

func (l *netLab) addr(i int) string { return fmt.Sprintf("%s.%d", l.prefix, 10+i) }

// cut takes node i (1-based) off the network; heal brings it back.
func (l *netLab) cut(i int)  { ipCmd(l.t, "link", "set", l.veth[i-1], "down") }
func (l *netLab) heal(i int) { ipCmd(l.t, "link", "set", l.veth[i-1], "up") }

func (l *netLab) remove() {
	for _, ns := range l.ns {
		_ = exec.Command("ip", "netns", "del", ns).Run() // deletes its veth pair too
	}
	_ = exec.Command("ip", "link", "del", l.bridge).Run()
}

// TestPartition cuts node3 off the network (its gossip, its links, its
// clients and its database), then heals it: the directories converge and
// no acknowledged report is lost.
func TestPartition(t *testing.T) {
	lab := newNetLab(t, 3)
	pg := pgtest.StartOptions(t, pgtest.Options{Settings: []string{"listen_addresses=127.0.0.1," + lab.prefix + ".1"}})
	hba := filepath.Join(pg.Dir(), "data", "pg_hba.conf")
	f, err := os.OpenFile(hba, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "host all all %s.0/24 trust\n", lab.prefix)
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	dsn := fmt.Sprintf("postgres://postgres@%s.1:%d/postgres?sslmode=disable", lab.prefix, pg.Port())

	hosts := []string{lab.addr(1), lab.addr(2), lab.addr(3)}
	nodes := startClusterOn(t, dsn, "1000", hosts, lab.ns, clusterOpts{})
	addUsers(t, dsn, "alice", "bob", "dev0", "dev1", "dev2", "dev3")

	// alice (node1) and bob (node3) are subscribed to each other
	a := dial(t, nodes[0], "alice")
	b := dial(t, nodes[2], "bob")
	for _, c := range []*xmpptest.Conn{a, b} {
		_ = c.Send("<presence/>")
	}
	_ = a.Send("<presence to='bob@example.com' type='subscribe'/>")
	expect(t, b, "type=\"subscribe\"")
	_ = b.Send("<presence to='alice@example.com' type='subscribed'/>")
	expect(t, a, "<presence", b.JID)

	proc := xmpptest.DialComponent(t, nodes[1].comp, "collector.example.com", "s3cret")
	if err := proc.EnableSM(false); err != nil {
		t.Fatal(err)
	}
	col := collect(t, proc)
	var devs []*device
	until := time.Now().Add(25 * time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		d := &device{user: fmt.Sprintf("dev%d", i)}
		devs = append(devs, d)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// half start on the node that will be cut off
			order := []string{nodes[2].c2s, nodes[0].c2s, nodes[1].c2s}
			if i%2 == 1 {
				order = []string{nodes[0].c2s, nodes[1].c2s, nodes[2].c2s}
			}
			d.run(t, order, until, 300)
		}()
	}
	dirBefore := 0
	testutil.WaitFor(t, 10*time.Second, "node1 sees node3's sessions", func() bool {
		dirBefore, _ = status(t, nodes[0].http)
		return dirBefore >= 1+2 // bob and two devices live on node3
	})
	time.Sleep(time.Second)
	lab.cut(3)
	cutAt := time.Now()
	testutil.WaitFor(t, 20*time.Second, "node1 drops node3", func() bool {
		_, m := status(t, nodes[0].http)
		return m == 2
	})
	t.Logf("node3 declared dead by node1 %v after the cut", time.Since(cutAt).Round(100*time.Millisecond))
	expect(t, a, "type=\"unavailable\"", b.JID) // alice learns bob is gone
	lab.heal(3)
	healAt := time.Now()
	testutil.WaitFor(t, 60*time.Second, "node3 back in every membership", func() bool {
		for _, n := range nodes {
			if _, m := status(t, n.http); m != 3 {
				return false
			}
		}
		return true
	})
	t.Logf("membership healed %v after the heal", time.Since(healAt).Round(100*time.Millisecond))
	// bob's session on node3 survived the split (its TCP connection was
	// idle); the directories converge on it again.
	testutil.WaitFor(t, 30*time.Second, "directories converge", func() bool {
		d1, _ := status(t, nodes[0].http)
		d2, _ := status(t, nodes[1].http)
		d3, _ := status(t, nodes[2].http)
		return d1 == d2 && d2 == d3 && d1 > 0
	})
	wg.Wait()
	t.Logf("acked %d reports, acked-but-lost 0", waitAckedDelivered(t, 30*time.Second, devs, col))
}
