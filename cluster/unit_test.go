package cluster

import (
	"bytes"
	"log"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestMetaRoundTrip(t *testing.T) {
	m := NodeMeta{C2S: "10.0.0.1:5222", C2STLS: "10.0.0.1:5223", Component: "10.0.0.1:5347", Link: "10.0.0.1:7947", HTTP: "10.0.0.1:5280"}
	l := Load{Sessions: 12345, Components: 3, StanzaRate: 250.5, CPU: 0.25}
	b := encodeMeta(m, l, 42)
	gm, gl, ep, err := decodeMeta(b)
	if err != nil || gm != m || gl != l || ep != 42 {
		t.Fatalf("round trip: %+v %+v %d %v", gm, gl, ep, err)
	}
	t.Logf("meta with 5 addresses and load: %d bytes", len(b))
	if _, _, _, err := decodeMeta(b[:len(b)-1]); err == nil {
		t.Fatal("truncated meta decoded")
	}
}

func TestMemberlistLogLevels(t *testing.T) {
	var buf bytes.Buffer
	w := &mlLogWriter{log: zerolog.New(&buf)}
	l := log.New(w, "", 0)
	for _, line := range []string{"[DEBUG] memberlist: a", "[INFO] memberlist: b", "[WARN] memberlist: c", "[ERR] memberlist: d", "[ERROR] memberlist: e", "plain"} {
		l.Print(line)
	}
	want := `{"level":"debug","message":"a"}
{"level":"info","message":"b"}
{"level":"warn","message":"c"}
{"level":"error","message":"d"}
{"level":"error","message":"e"}
{"level":"info","message":"plain"}
`
	if buf.String() != want {
		t.Fatalf("got\n%s", buf.String())
	}
	w.detach()
	l.Print("[ERR] after detach")
	if buf.String() != want {
		t.Fatal("logged after detach")
	}
}

func TestDirectoryVersions(t *testing.T) {
	d := newDirectory()
	now := time.Now()
	up, _ := d.applyDelta("b", []Session{{JID: "u@x/r", Version: 10, Available: true}}, now)
	if len(up) != 1 {
		t.Fatal("new entry not reported")
	}
	if up, _ := d.applyDelta("b", []Session{{JID: "u@x/r", Version: 9, Show: "stale"}}, now); len(up) != 0 {
		t.Fatal("stale version applied")
	}
	_, gone := d.applyDelta("b", []Session{{JID: "u@x/r", Version: 11, Deleted: true}}, now)
	if len(gone) != 1 || d.size() != 0 {
		t.Fatalf("tombstone: gone=%v size=%d", gone, d.size())
	}
	// A late upsert older than the tombstone does not resurrect it.
	if up, _ := d.applyDelta("b", []Session{{JID: "u@x/r", Version: 10}}, now); len(up) != 0 || d.size() != 0 {
		t.Fatal("tombstone lost to an older upsert")
	}
	// Same full JID on another node is a separate entry; the newest wins lookups.
	d.applyDelta("b", []Session{{JID: "v@x/r", Version: 20}}, now)
	d.applyDelta("c", []Session{{JID: "v@x/r", Version: 30}}, now)
	if s, _ := d.lookupFull("v@x/r"); s.Node != "c" {
		t.Fatalf("lookupFull = %+v", s)
	}
	if l := d.lookup("v@x"); len(l) != 1 || l[0].Node != "c" {
		t.Fatalf("lookup = %+v", l)
	}
	// b's tombstone for its own entry leaves c's in place.
	d.applyDelta("b", []Session{{JID: "v@x/r", Version: 40, Deleted: true}}, now)
	if s, ok := d.lookupFull("v@x/r"); !ok || s.Node != "c" {
		t.Fatalf("after b's tombstone: %+v %v", s, ok)
	}
}

func TestDirectorySnapshotReplacesStale(t *testing.T) {
	d := newDirectory()
	now := time.Now()
	d.applyDelta("b", []Session{{JID: "old@x/r", Version: 5}, {JID: "keep@x/r", Version: 6}}, now)
	// b restarted: its snapshot at clock 100 lists keep (re-bound) and new.
	up, gone := d.applySnapshot("b", 100, 99, []Session{{JID: "keep@x/r", Version: 98}, {JID: "new@x/r", Version: 99}})
	if len(up) != 2 || len(gone) != 1 || gone[0].JID != "old@x/r" {
		t.Fatalf("up=%v gone=%v", up, gone)
	}
	// Deltas covered by the snapshot are ignored; newer ones apply.
	if up, _ := d.applyDelta("b", []Session{{JID: "old@x/r", Version: 7}}, now); len(up) != 0 {
		t.Fatal("delta below snapshot floor applied")
	}
	if up, _ := d.applyDelta("b", []Session{{JID: "x@x/r", Version: 101}}, now); len(up) != 1 {
		t.Fatal("delta above floor ignored")
	}
	dg, _ := d.digestOf("b")
	if dg.Count != 3 || dg.Max != 101 {
		t.Fatalf("digest %+v", dg)
	}
	if gone := d.dropOwner("b"); len(gone) != 3 || d.size() != 0 || len(d.bare) != 0 {
		t.Fatalf("dropOwner: %d gone, size %d, bare %d", len(gone), d.size(), len(d.bare))
	}
}

func TestStateRoundTrip(t *testing.T) {
	c, err := New(Config{NodeName: "a", Local: true, BindAddr: "127.0.0.1", SecretKey: testKey}, newRec().all())
	if err != nil {
		t.Fatal(err)
	}
	c.UpsertLocal(Session{JID: "u@x/r"})
	c.dir.applyDelta("b", []Session{{JID: "w@x/r", Version: 3}}, time.Now())
	ds, err := decodeState(c.localState())
	if err != nil || len(ds) != 2 || ds[0].Owner != "a" || ds[0].Count != 1 || ds[1].Owner != "b" || ds[1].Max != 3 {
		t.Fatalf("%+v %v", ds, err)
	}
	if _, err := decodeState([]byte{9, 1}); err == nil {
		t.Fatal("unknown state type accepted")
	}
}
