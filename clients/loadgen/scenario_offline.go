package main

import (
	"sync"
	"time"
)

// runOffline runs the offline scenario: reports to the component while it
// is absent: what the clients get back, then what the component receives
// once it connects.
func runOffline(o options) (map[string]any, error) {
	r := newRun(o)
	r.seen = make([]map[int]struct{}, o.n)
	for i := range r.seen {
		r.seen[i] = map[int]struct{}{}
	}
	conns, dones, err := r.setupClients()
	if err != nil {
		return nil, err
	}
	defer func() {
		closeAll(conns)
		for _, d := range dones {
			<-d
		}
	}()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range o.perClient {
				if err := c.write(r.report(i, seq)); err != nil {
					return
				}
				r.sent.Add(1)
				r.sentPer[i].Add(1)
			}
		}()
	}
	wg.Wait()
	// Bounces and acks while the component is away.
	settleEnd := time.Now().Add(o.settle)
	for r.bounced.Load() < r.sent.Load() && time.Now().Before(settleEnd) {
		time.Sleep(20 * time.Millisecond)
	}
	acked := r.waitAcks(conns, o.settle)
	bouncedBefore := r.bounced.Load()
	comp, err := r.startComponent()
	if err != nil {
		return nil, err
	}
	// Receive until everything not bounced arrived, or 2 s of silence, or
	// the drain bound.
	drainEnd := time.Now().Add(o.drain)
	last, lastChange := int64(-1), time.Now()
	for time.Now().Before(drainEnd) {
		got := r.received.Load()
		if got+r.bounced.Load() >= r.sent.Load() {
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		} else if time.Since(lastChange) > 2*time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.stopComponent(comp)
	sent, recv, bounced := r.sent.Load(), r.received.Load(), r.bounced.Load()
	res := map[string]any{
		"clients": o.n, "per_client": o.perClient, "sent": sent,
		"bounced_while_absent": bouncedBefore, "bounced": bounced,
		"component_received": recv, "duplicates": r.dup.Load(), "stale": r.stale.Load(),
		"silently_lost": sent - recv - bounced, "not_delivered": sent - recv,
		"component_sm": r.compSM, "client_sm": r.smPer[0], "errors_by_type": r.errCounts(),
	}
	if acked >= 0 {
		res["client_acked"] = acked
	}
	return res, nil
}
