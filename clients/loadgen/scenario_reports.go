package main

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// runReports runs the reports scenario: N clients each keep W reports in
// flight (or send at -rate in total) to a component that loadgen also
// runs; delivered reports/s, send-to-component latency, lost reports.
func runReports(o options) (map[string]any, error) {
	r := newRun(o)
	comp, err := r.startComponent()
	if err != nil {
		return nil, err
	}
	defer r.stopComponent(comp)
	conns, dones, err := r.setupClients()
	if err != nil {
		return nil, err
	}
	defer closeAll(conns)
	r.tokens = make([]chan struct{}, o.n)
	for i := range r.tokens {
		r.tokens[i] = make(chan struct{}, o.window)
		for range o.window {
			r.tokens[i] <- struct{}{}
		}
	}
	cpu := startCPU(o.serverPIDs)
	start := time.Now()
	deadline := start.Add(o.duration)
	r.latFrom = start.Add(o.warmup).UnixNano()
	r.winEnd.Store(deadline.UnixNano())
	stop := time.NewTimer(o.duration)
	defer stop.Stop()
	stopped := make(chan struct{})
	go func() { <-stop.C; close(stopped) }()
	var wg sync.WaitGroup
	var writeErrs atomic.Int64
	var behind atomic.Int64 // rate mode: sends later than 10 ms after schedule
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var interval time.Duration
			var first time.Time
			if o.rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(o.n) / o.rate)
				first = start.Add(time.Duration(i) * interval / time.Duration(o.n))
			}
			for seq := 0; seq < 1<<31-1; seq++ {
				if o.rate > 0 {
					at := first.Add(time.Duration(seq) * interval)
					if !at.Before(deadline) {
						return
					}
					if d := time.Until(at); d > 0 {
						select {
						case <-time.After(d):
						case <-stopped:
							return
						}
					} else if d < -10*time.Millisecond {
						behind.Add(1)
					}
				}
				select {
				case <-r.tokens[i]:
				case <-stopped:
					return
				}
				if !time.Now().Before(deadline) {
					return
				}
				// A buffered client writes every report its window allows
				// at once (one write); at a steady rate each goes alone.
				k := 1
				for o.rate == 0 && o.burst && k < o.window && r.takeToken(i) {
					k++
				}
				var buf []byte
				for j := range k {
					r.sentReport(i, time.Now().UnixNano())
					buf = append(buf, r.report(i, seq+j)...)
				}
				seq += k - 1
				if err := c.write(buf); err != nil {
					writeErrs.Add(1)
					return
				}
				r.sent.Add(int64(k))
				r.sentPer[i].Add(int64(k))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	// Drain: wait for what is still in flight.
	drainEnd := time.Now().Add(o.drain)
	for r.received.Load()+r.bounced.Load() < r.sent.Load() && time.Now().Before(drainEnd) {
		time.Sleep(10 * time.Millisecond)
	}
	// CPU per report: from the start to the end of the drain (what the
	// reports cost), before the final acks.
	cpuRes := map[string]any{}
	cpu.record(cpuRes, r.received.Load())
	acked := r.waitAcks(conns, 3*time.Second)
	sent, recv, bounced := r.sent.Load(), r.received.Load(), r.bounced.Load()
	r.latMu.Lock()
	p50, p99 := percentiles(r.lat)
	nlat := len(r.lat)
	ackP50, ackP99 := percentiles(r.ackLat)
	nack := len(r.ackLat)
	r.latMu.Unlock()
	res := map[string]any{
		"clients": o.n, "window": o.window, "duration_s": round3(elapsed.Seconds()), "size": o.size,
		"sent": sent, "received": recv, "bounced": bounced, "lost": sent - recv - bounced,
		"reports_per_s": round3(float64(r.inWindow.Load()) / o.duration.Seconds()),
		"p50_ms":        p50, "p99_ms": p99, "latency_samples": nlat,
		"component_sm": r.compSM, "client_sm": r.smPer[0], "stale": r.stale.Load(),
		"write_errors": writeErrs.Load(), "starttls": o.startTLS,
		"errors_by_type": r.errCounts(),
	}
	maps.Copy(res, cpuRes)
	res["write_burst"] = o.burst && o.rate == 0
	if acked >= 0 {
		res["client_acked"] = acked
	}
	if nack > 0 {
		res["ack_p50_ms"], res["ack_p99_ms"], res["ack_samples"] = ackP50, ackP99, nack
	}
	if o.rate > 0 {
		res["rate"] = o.rate
		res["late_sends"] = behind.Load()
	}
	closeAll(conns)
	for _, d := range dones {
		<-d
	}
	conns = nil
	return res, nil
}
