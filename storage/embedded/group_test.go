package embedded

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bktTest = []byte("test")

func openBolt(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "group.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket(bktTest)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return db
}

func put(key string) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error { return tx.Bucket(bktTest).Put([]byte(key), []byte("v")) }
}

func keys(t *testing.T, db *bolt.DB) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktTest).ForEach(func(k, _ []byte) error { out[string(k)] = true; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// blockLeader starts an update whose function blocks until release is
// closed, and waits until it runs: later updates queue behind it.
func blockLeader(t *testing.T, g *writeGroup, db *bolt.DB, release <-chan struct{}) <-chan error {
	t.Helper()
	running := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- g.update(db, func(tx *bolt.Tx) error {
			close(running)
			<-release
			return tx.Bucket(bktTest).Put([]byte("leader"), []byte("v"))
		})
	}()
	<-running
	return errc
}

// waitQueued waits until n requests wait behind the running commit.
func waitQueued(t *testing.T, g *writeGroup, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.mu.Lock()
		got := len(g.waiting)
		g.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Requests that arrive during a commit are committed together in the next
// transaction, each sees the earlier ones' writes, and all are durable.
func TestWriteGroupSharesOneCommit(t *testing.T) {
	db := openBolt(t)
	var g writeGroup
	release := make(chan struct{})
	leaderErr := blockLeader(t, &g, db, release)

	const n = 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	txIDs := map[int]bool{}
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.update(db, func(tx *bolt.Tx) error {
				mu.Lock()
				txIDs[tx.ID()] = true
				mu.Unlock()
				return put(fmt.Sprint("k", i))(tx)
			})
		}()
		waitQueued(t, &g, i+1) // one at a time: arrival order is known
	}
	close(release)
	wg.Wait()
	if err := <-leaderErr; err != nil {
		t.Fatalf("leader: %v", err)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
	}
	if len(txIDs) != 1 {
		t.Fatalf("%d queued updates ran in %d transactions, want 1", n, len(txIDs))
	}
	got := keys(t, db)
	if len(got) != n+1 {
		t.Fatalf("%d keys committed, want %d: %v", len(got), n+1, got)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.leading || len(g.waiting) != 0 {
		t.Fatalf("after the last commit: leading=%v waiting=%d", g.leading, len(g.waiting))
	}
}

// A function's error reaches only its caller: the others of its group are
// committed, the failing one's writes are not.
func TestWriteGroupErrorStaysWithItsCaller(t *testing.T) {
	db := openBolt(t)
	var g writeGroup
	release := make(chan struct{})
	leaderErr := blockLeader(t, &g, db, release)

	errExpected := errors.New("expected failure")
	fns := []func(*bolt.Tx) error{
		put("a"),
		func(tx *bolt.Tx) error {
			if err := put("bad")(tx); err != nil {
				return err
			}
			return errExpected
		},
		put("b"),
	}
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.update(db, fn)
		}()
		waitQueued(t, &g, i+1)
	}
	close(release)
	wg.Wait()
	if err := <-leaderErr; err != nil {
		t.Fatalf("leader: %v", err)
	}
	if errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], errExpected) {
		t.Fatalf("errors %v, want [nil, %v, nil]", errs, errExpected)
	}
	got := keys(t, db)
	if !got["a"] || !got["b"] || !got["leader"] || got["bad"] {
		t.Fatalf("committed %v, want a, b and leader, not bad", got)
	}
}

// A panicking function fails the rest of its group with an error, panics
// in its caller, and the next writers still commit.
func TestWriteGroupPanicDoesNotStrandWaiters(t *testing.T) {
	db := openBolt(t)
	var g writeGroup
	release := make(chan struct{})
	leaderErr := blockLeader(t, &g, db, release)

	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		_ = g.update(db, func(*bolt.Tx) error { panic("boom") })
	}()
	waitQueued(t, &g, 1)
	otherErr := make(chan error, 1)
	go func() { otherErr <- g.update(db, put("other")) }()
	waitQueued(t, &g, 2)
	close(release)
	if err := <-leaderErr; err != nil {
		t.Fatalf("leader: %v", err)
	}
	select {
	case p := <-panicked:
		if p != "boom" {
			t.Fatalf("recovered %v, want boom", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the panicking caller never returned")
	}
	select {
	case err := <-otherErr:
		if err == nil {
			t.Fatal("a request of the panicked group reported success")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiter of the panicked group never returned")
	}
	if err := g.update(db, put("after")); err != nil {
		t.Fatalf("update after the panic: %v", err)
	}
	if got := keys(t, db); !got["after"] || got["other"] {
		t.Fatalf("committed %v, want after and not other", got)
	}
}
