package main

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"xcollect.dev/xcollect/internal/wire"
)

// The streams of the reports and offline scenarios: the component's and
// each client's read loop, login and stream management setup, and the
// final wait for acks.

// iqReply answers an IQ request: a result to an XEP-0199 ping, else
// service-unavailable.
func iqReply(el *wire.Element) []byte {
	b := []byte("<iq")
	b = wire.AppendAttr(b, "id", el.Get("id"))
	b = wire.AppendAttr(b, "from", el.Get("to"))
	b = wire.AppendAttr(b, "to", el.Get("from"))
	if strings.Contains(string(el.Raw), "urn:xmpp:ping") {
		return append(b, " type='result'/>"...)
	}
	return append(b, " type='error'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"...)
}

// componentLoop reads the component stream until it ends.
func (r *reportRun) componentLoop(c *conn, early []*wire.Element) {
	defer close(r.compDone)
	var h uint32
	handle := func(el *wire.Element) error {
		if el.Name.Space == wire.NSSM {
			if el.Name.Local == "r" && r.compSM {
				return c.write(wire.Ack(h))
			}
			return nil
		}
		switch el.Name.Local {
		case "message", "presence", "iq":
			h++
		default:
			return nil
		}
		if el.Name.Local == "iq" && (el.Get("type") == "get" || el.Get("type") == "set") {
			// RFC 6120 §8.2.3: every request gets an answer. Without
			// XEP-0198 an xcollect node pings after each batch and deletes
			// the rows once the answer comes.
			return c.write(iqReply(el))
		}
		if el.Name.Local != "message" || el.Get("type") == "error" {
			return nil
		}
		now := time.Now().UnixNano()
		ci, seq, ns, ours := r.parseID(el.Get("id"))
		if !ours {
			r.stale.Add(1)
			return nil
		}
		if r.seen != nil {
			if _, dup := r.seen[ci][seq]; dup {
				r.dup.Add(1)
				return nil
			}
			r.seen[ci][seq] = struct{}{}
		}
		r.received.Add(1)
		if now <= r.winEnd.Load() {
			r.inWindow.Add(1)
		}
		if ns >= r.latFrom {
			r.latMu.Lock()
			if len(r.lat) < maxLatencies {
				r.lat = append(r.lat, (now-ns)/1000)
			}
			r.latMu.Unlock()
		}
		r.release(ci)
		return nil
	}
	for _, el := range early {
		if handle(el) != nil {
			return
		}
	}
	for {
		el, err := c.next()
		if err != nil {
			return
		}
		if handle(el) != nil {
			return
		}
	}
}

// clientLoop reads one client stream: acks, bounces, <r/>.
func (r *reportRun) clientLoop(ci int, c *conn, done chan<- struct{}) {
	defer close(done)
	var h uint32
	for {
		el, err := c.next()
		if err != nil {
			return
		}
		if el.Name.Space == wire.NSSM {
			switch el.Name.Local {
			case "a":
				if v, err := strconv.ParseUint(el.Get("h"), 10, 32); err == nil {
					r.ackedPer[ci].Store(int64(v))
					r.ackedReports(ci, int(v))
				}
			case "r":
				_ = c.write(wire.Ack(h)) // a failed write shows as a read error
			}
			continue
		}
		switch el.Name.Local {
		case "message", "presence", "iq":
			h++
		default:
			continue
		}
		if el.Name.Local == "message" && el.Get("type") == "error" {
			if _, _, _, ours := r.parseID(el.Get("id")); ours {
				r.bounced.Add(1)
				cond := errorCondition(el.Raw)
				v, _ := r.errTypes.LoadOrStore(cond, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
				r.release(ci)
			}
		}
	}
}

// errorCondition extracts the first stanza error condition from raw XML.
func errorCondition(raw []byte) string {
	s := string(raw)
	i := strings.Index(s, "urn:ietf:params:xml:ns:xmpp-stanzas")
	if i < 0 {
		return "unknown"
	}
	j := strings.LastIndexByte(s[:i], '<')
	if j < 0 {
		return "unknown"
	}
	name := s[j+1:]
	if k := strings.IndexAny(name, " />"); k >= 0 {
		name = name[:k]
	}
	return name
}

// setupClients logs the clients in, enables SM when asked and offered,
// and starts their read loops.
func (r *reportRun) setupClients() ([]*conn, []chan struct{}, error) {
	conns, failed, err := dialAll(r.o, r.o.n)
	if failed > 0 {
		closeAll(conns)
		return nil, nil, err
	}
	dones := make([]chan struct{}, len(conns))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var smErr error
	for i, c := range conns {
		if r.o.clientSM != "off" && c.smOffer {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, _, err := c.enableSM(stepTimeout, r.o.clientSM == "resume")
				if err != nil || !ok {
					mu.Lock()
					smErr = fmt.Errorf("client %d: enable stream management: ok=%v %v", i, ok, err)
					mu.Unlock()
				}
				r.smPer[i] = ok
			}()
		}
	}
	wg.Wait()
	if smErr != nil {
		closeAll(conns)
		return nil, nil, smErr
	}
	for i, c := range conns {
		dones[i] = make(chan struct{})
		go r.clientLoop(i, c, dones[i])
	}
	return conns, dones, nil
}

func closeAll(conns []*conn) {
	for _, c := range conns {
		if c != nil {
			c.close()
		}
	}
}

func (r *reportRun) startComponent() (*conn, error) {
	var c *conn
	var sm bool
	var early []*wire.Element
	var err error
	// The server may not have seen the previous run's component leave yet
	// (conflict): retry for a few seconds.
	for try := 0; try < 20; try++ {
		c, sm, early, err = dialComponentSM(r.o.compAddr, r.o.compJID, r.o.secret, r.o.compSM)
		if err == nil || !strings.Contains(err.Error(), "conflict") {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("component: %w", err)
	}
	r.compSM = sm
	r.compDone = make(chan struct{})
	go r.componentLoop(c, early)
	return c, nil
}

// stopComponent acknowledges everything (rows are deleted) and closes.
func (r *reportRun) stopComponent(c *conn) {
	c.close()
	select {
	case <-r.compDone:
	case <-time.After(5 * time.Second):
	}
}

// waitAcks asks every SM client for an ack and waits until each acked all
// it sent, bounded by d. It returns the acked total.
func (r *reportRun) waitAcks(conns []*conn, d time.Duration) int64 {
	anySM := false
	for i, c := range conns {
		if r.smPer[i] {
			anySM = true
			_ = c.write([]byte("<r xmlns='urn:xmpp:sm:3'/>")) // a dead stream shows as unacked
		}
	}
	if !anySM {
		return -1
	}
	deadline := time.Now().Add(d)
	for {
		var total int64
		all := true
		for i := range conns {
			a := r.ackedPer[i].Load()
			total += a
			if r.smPer[i] && a < r.sentPer[i].Load() {
				all = false
			}
		}
		if all || time.Now().After(deadline) {
			return total
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *reportRun) errCounts() map[string]int64 {
	m := map[string]int64{}
	r.errTypes.Range(func(k, v any) bool {
		m[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return m
}
