package main

import (
	"errors"
	"time"
)

// runIdle runs the idle scenario: N authenticated idle sessions; the
// server's RSS growth per session.
func runIdle(o options) (map[string]any, error) {
	if o.serverPIDs == "" {
		return nil, errors.New("idle: -server-pid is required")
	}
	// Warm up: the first sessions of a fresh server also pay for pools,
	// caches and heap growth that later sessions reuse; measure after them.
	if o.idleWarmup > 0 {
		w, failed, err := dialAll(o, o.idleWarmup)
		closeAll(w)
		if failed > 0 {
			return nil, err
		}
		time.Sleep(o.settle)
	}
	before, err := vmRSS(o.serverPIDs)
	if err != nil {
		return nil, err
	}
	conns, failed, err := dialAll(o, o.n)
	defer closeAll(conns)
	if failed > 0 {
		return nil, err
	}
	time.Sleep(o.settle)
	after, err := vmRSS(o.serverPIDs)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"sessions": o.n, "warmup": o.idleWarmup, "starttls": o.startTLS, "rss_before_kib": before, "rss_after_kib": after,
		"kib_per_session": round3(float64(after-before) / float64(o.n)),
	}, nil
}
