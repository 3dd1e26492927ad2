package connlimit

import (
	"testing"
	"time"
)

func TestSamplerThinsAStorm(t *testing.T) {
	s := Sampler{Interval: 10 * time.Second, MaxEntries: 2}
	t0 := time.Unix(1000, 0)
	if ok, n := s.Allow("c", t0); !ok || n != 0 {
		t.Fatalf("first event: %v %d", ok, n)
	}
	for i := range 99 {
		if ok, _ := s.Allow("c", t0.Add(time.Duration(i)*time.Millisecond)); ok {
			t.Fatalf("event %d inside the interval was allowed", i)
		}
	}
	if ok, _ := s.Allow("other", t0); !ok {
		t.Fatal("another key is not held back by c")
	}
	if ok, n := s.Allow("c", t0.Add(11*time.Second)); !ok || n != 99 {
		t.Fatalf("after the interval: %v, %d unreported; want true, 99", ok, n)
	}
	s.Prune(t0.Add(time.Minute))
	if len(s.byKey) != 0 {
		t.Fatalf("prune kept %d keys", len(s.byKey))
	}
}

func TestConcurrentCaps(t *testing.T) {
	var c Concurrent
	first, second, third := c.Enter("k", 2), c.Enter("k", 2), c.Enter("k", 2)
	if !first || !second || third {
		t.Fatalf("Enter with max 2: %v %v %v; want two admitted, the third refused", first, second, third)
	}
	c.Leave("k")
	if !c.Enter("k", 2) {
		t.Fatal("a slot freed by Leave was not reusable")
	}
	c.Leave("k")
	c.Leave("k")
	if len(c.n) != 0 {
		t.Fatalf("counts left after every Leave: %v", c.n)
	}
}
