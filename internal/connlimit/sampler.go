package connlimit

import (
	"sync"
	"time"
)

// Sampler thins a stream of log-worthy events per key: Allow says yes at
// most once per Interval for a key and tells how many events it said no
// to since, so one line stands for a storm. Its table holds at most
// MaxEntries keys (0: unbounded). Safe for concurrent use.
type Sampler struct {
	Interval   time.Duration
	MaxEntries int

	mu    sync.Mutex
	byKey map[string]*sampleEntry
}

type sampleEntry struct {
	last       time.Time
	suppressed int
}

// Allow reports whether an event of key at now should be logged, and how
// many events of key were not logged since the last one that was.
func (s *Sampler) Allow(key string, now time.Time) (ok bool, suppressed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byKey == nil {
		s.byKey = make(map[string]*sampleEntry)
	}
	e := s.byKey[key]
	if e == nil {
		if s.MaxEntries > 0 && len(s.byKey) >= s.MaxEntries {
			for k := range s.byKey { // map order: an arbitrary entry
				delete(s.byKey, k)
				break
			}
		}
		s.byKey[key] = &sampleEntry{last: now}
		return true, 0
	}
	if now.Sub(e.last) < s.Interval {
		e.suppressed++
		return false, 0
	}
	suppressed = e.suppressed
	e.last, e.suppressed = now, 0
	return true, suppressed
}

// Prune forgets keys whose last logged event is older than Interval and
// that have nothing unreported.
func (s *Sampler) Prune(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.byKey {
		if now.Sub(e.last) > s.Interval && e.suppressed == 0 {
			delete(s.byKey, k)
		}
	}
}
