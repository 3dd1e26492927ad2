package main

import (
	"fmt"
	"sync"
	"time"
)

// runLogin runs the login scenario: N workers log in and out in a loop;
// logins/s and login latency.
func runLogin(o options) (map[string]any, error) {
	start := time.Now()
	deadline := start.Add(o.duration)
	lats := make([][]int64, o.n)
	errs := make([]int, o.n)
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range o.n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opts := c2sOpts(o, w)
			for i := 0; i < 10_000_000 && time.Now().Before(deadline); i++ {
				t0 := time.Now()
				c, err := dialC2S(opts)
				if err != nil {
					errs[w]++
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					time.Sleep(10 * time.Millisecond)
					continue
				}
				lats[w] = append(lats[w], time.Since(t0).Microseconds())
				c.close()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []int64
	nerr := 0
	for w := range o.n {
		all = append(all, lats[w]...)
		nerr += errs[w]
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("no login succeeded: %v", firstErr)
	}
	p50, p99 := percentiles(all)
	res := map[string]any{
		"workers": o.n, "starttls": o.startTLS, "mech": o.mech, "duration_s": round3(elapsed.Seconds()),
		"logins": len(all), "errors": nerr, "logins_per_s": round3(float64(len(all)) / elapsed.Seconds()),
		"p50_ms": p50, "p99_ms": p99,
	}
	if firstErr != nil {
		res["first_error"] = firstErr.Error()
	}
	return res, nil
}
