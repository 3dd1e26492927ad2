package connlimit

import (
	"fmt"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := New(3, 2)
	for i, tc := range []struct {
		ip   string
		ok   bool
		cond string
	}{
		{"a", true, ""}, {"a", true, ""}, {"a", false, "policy-violation"},
		{"b", true, ""}, {"c", false, "resource-constraint"},
	} {
		ref, ok := l.Acquire(tc.ip)
		if ok != tc.ok || ref.Condition != tc.cond {
			t.Fatalf("step %d (%s): ok=%v %q; want %v %q", i, tc.ip, ok, ref.Condition, tc.ok, tc.cond)
		}
	}
	l.Release("a")
	if _, ok := l.Acquire("c"); !ok {
		t.Fatal("a released place was not reused")
	}
	for _, ip := range []string{"a", "b", "c"} {
		l.Release(ip)
	}
	if l.Live() != 0 || len(l.byAddr) != 0 {
		t.Fatalf("after releasing all: live %d, table %d", l.Live(), len(l.byAddr))
	}
}

func TestPenalty(t *testing.T) {
	p := &Penalty{Free: 2, Window: time.Minute, Max: time.Second, MaxEntries: 10}
	now := time.Unix(1000, 0)
	var got []time.Duration
	for i := 0; i < 6; i++ {
		got = append(got, p.Fail("a", now))
	}
	want := []time.Duration{0, 0, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, time.Second}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delays %v; want %v", got, want)
	}
	if d := p.Delay("a", now); d != time.Second {
		t.Fatalf("delay of an address in penalty: %v", d)
	}
	if d := p.Delay("a", now.Add(2*time.Minute)); d != 0 {
		t.Fatalf("delay after the window: %v", d)
	}
	for i := 0; i < 1000; i++ {
		p.Fail(fmt.Sprint(i), now)
	}
	if len(p.byAddr) > 10 {
		t.Fatalf("table holds %d; want at most 10", len(p.byAddr))
	}
	p.Prune(now.Add(2 * time.Minute))
	if len(p.byAddr) != 0 {
		t.Fatalf("after prune: %d", len(p.byAddr))
	}
}
