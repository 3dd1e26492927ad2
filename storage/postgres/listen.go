package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
)

// Reconnect backoff of the LISTEN connection.
const (
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
)

// listener owns the LISTEN connection and fans notifications out to
// subscribers. Its loop goroutine is started by startListener and stopped
// by stop. Sends to subscribers never block: each channel has room for one
// value, and a pending value already says "look again".
type listener struct {
	cc     *pgx.ConnConfig
	log    zerolog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	subs map[string]map[*subscription]struct{} // component -> subscribers
}

type subscription struct{ ch chan struct{} }

func startListener(cc *pgx.ConnConfig, log zerolog.Logger) *listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{cc: cc, log: log, cancel: cancel, done: make(chan struct{}), subs: map[string]map[*subscription]struct{}{}}
	go l.loop(ctx)
	return l
}

// stop ends the loop and waits for it (bounded by the loop's own timeouts).
func (l *listener) stop() {
	l.cancel()
	<-l.done
}

func (l *listener) subscribe(component string) (<-chan struct{}, func()) {
	s := &subscription{ch: make(chan struct{}, 1)}
	l.mu.Lock()
	if l.subs[component] == nil {
		l.subs[component] = map[*subscription]struct{}{}
	}
	l.subs[component][s] = struct{}{}
	l.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.subs[component], s)
			if len(l.subs[component]) == 0 {
				delete(l.subs, component)
			}
			l.mu.Unlock()
		})
	}
}

// signal wakes component's subscribers without blocking.
func (l *listener) signal(component string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range l.subs[component] {
		wake(s)
	}
}

// signalAll wakes every subscriber: after a (re)connect notifications may
// have been missed.
func (l *listener) signalAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, subs := range l.subs {
		for s := range subs {
			wake(s)
		}
	}
}

func wake(s *subscription) {
	select {
	case s.ch <- struct{}{}:
	default:
	}
}

// loop connects, LISTENs and forwards notifications until ctx ends,
// reconnecting with exponential backoff.
func (l *listener) loop(ctx context.Context) {
	defer close(l.done)
	backoff := listenBackoffMin
	failing := false
	for ctx.Err() == nil {
		err := l.session(ctx, func() {
			if failing {
				l.log.Info().Msg("postgres LISTEN connection back; waking all queue subscribers")
			}
			failing, backoff = false, listenBackoffMin
			l.signalAll()
		})
		if ctx.Err() != nil {
			return
		}
		if !failing {
			l.log.Warn().Err(err).Msg("postgres LISTEN connection lost; reconnecting")
			failing = true
		} else {
			l.log.Debug().Err(err).Dur("retry_in", backoff).Msg("postgres LISTEN reconnect failed")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, listenBackoffMax)
	}
}

// session runs one LISTEN connection; connected is called once LISTEN is in
// place. It returns why the connection ended.
func (l *listener) session(ctx context.Context, connected func()) error {
	cctx, cancel := context.WithTimeout(ctx, l.cc.ConnectTimeout+time.Second)
	conn, err := pgx.ConnectConfig(cctx, l.cc)
	if err == nil {
		_, err = conn.Exec(cctx, "LISTEN "+notifyChannel)
	}
	cancel()
	if conn != nil {
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if err := conn.Close(cctx); err != nil {
				l.log.Debug().Err(err).Msg("closing LISTEN connection")
			}
		}()
	}
	if err != nil {
		return err
	}
	connected()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		l.signal(n.Payload)
	}
}
