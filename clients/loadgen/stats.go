package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// percentiles returns p50 and p99 of durations given in microseconds, in
// milliseconds (0 for none).
func percentiles(us []int64) (p50, p99 float64) {
	if len(us) == 0 {
		return 0, 0
	}
	s := slices.Clone(us)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		i = max(0, min(i, len(s)-1))
		return round3(float64(s[i]) / 1000)
	}
	return at(0.50), at(0.99)
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// vmRSS returns the summed VmRSS in KiB of the given comma-separated pids.
func vmRSS(pids string) (int64, error) {
	var total int64
	for _, p := range strings.Split(pids, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		f, err := os.Open("/proc/" + p + "/status")
		if err != nil {
			return 0, err
		}
		sc := bufio.NewScanner(f)
		found := false
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err != nil {
					f.Close()
					return 0, err
				}
				total += n
				found = true
			}
		}
		f.Close()
		if !found {
			return 0, fmt.Errorf("no VmRSS for pid %s", p)
		}
	}
	return total, nil
}

// dialAll logs in n clients with at most conc logins at a time, bounded by
// a deadline. It returns the connections that succeeded (nil entries for
// failures) and the first error.
func dialAll(o options, n int) ([]*conn, int, error) {
	conns := make([]*conn, n)
	sem := make(chan struct{}, max(1, o.dialConc))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	failed := 0
	deadline := time.Now().Add(60*time.Second + time.Duration(n)*20*time.Millisecond)
	for i := range n {
		if time.Now().After(deadline) {
			mu.Lock()
			failed += n - i
			if firstErr == nil {
				firstErr = fmt.Errorf("setup: %d sessions not opened in time", n-i)
			}
			mu.Unlock()
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialC2S(c2sOpts(o, i))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = fmt.Errorf("login user %d: %w", i%o.users, err)
				}
				return
			}
			conns[i] = c
		}(i)
	}
	wg.Wait()
	return conns, failed, firstErr
}

func c2sOpts(o options, i int) c2sOptions {
	u := i % o.users
	return c2sOptions{
		addr: c2sAddrFor(o, i), domain: o.domain, startTLS: o.startTLS, mech: o.mech,
		user: pattern(o.userPat, u), pass: pattern(o.passPat, u),
		resource: fmt.Sprintf("lg%d", i),
	}
}

func pattern(p string, i int) string {
	if strings.Contains(p, "%d") {
		return fmt.Sprintf(p, i)
	}
	return p
}

// c2sAddrFor is the c2s address of client i: the i mod k-th of -c2s's
// comma-separated list (the only address when there is one).
func c2sAddrFor(o options, i int) string {
	if len(o.c2sAddrs) == 0 {
		return o.c2sAddr
	}
	return o.c2sAddrs[i%len(o.c2sAddrs)]
}
