package server

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"xcollect.dev/xcollect/internal/connlimit"
	"xcollect.dev/xcollect/internal/wire"
)

// listen opens a c2s listener and its accept loop.
func (s *Server) listen(name, addr string, directTLS bool) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("server: listen %s on %s: %w", name, addr, err)
	}
	s.mu.Lock()
	s.lns = append(s.lns, ln)
	s.addrs[name] = ln.Addr()
	s.mu.Unlock()
	s.log.Info().Str("listener", name).Str("addr", ln.Addr().String()).Msg("listening")
	s.spawn(func() { s.acceptLoop(ln, directTLS) })
	return nil
}

func (s *Server) acceptLoop(ln net.Listener, directTLS bool) {
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, do not spin.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay < time.Second {
				delay *= 2
			}
			s.log.Warn().Err(err).Dur("retry_in", delay).Msg("accept")
			time.Sleep(delay)
			continue
		}
		delay = 0
		ip := remoteIP(conn)
		if ref, ok := s.connLimit.Acquire(ip); !ok {
			s.refuse(conn, directTLS, ref)
			continue
		}
		if !s.spawn(func() {
			defer s.connLimit.Release(ip)
			s.serveConn(conn, directTLS)
		}) {
			s.connLimit.Release(ip)
			conn.Close()
			return
		}
	}
}

// maxRefusing bounds the goroutines writing refusals; beyond it a
// refused connection is closed without a stream error.
const maxRefusing = 64

// refuse answers a connection over the limits with our stream header and
// the stream error (RFC 6120 §4.9.1.1), then closes it.
func (s *Server) refuse(conn net.Conn, directTLS bool, ref connlimit.Refusal) {
	s.log.Warn().Str("remote", conn.RemoteAddr().String()).Str("condition", ref.Condition).Msg("connection refused: connection limit")
	if s.refusing.Add(1) > maxRefusing {
		s.refusing.Add(-1)
		conn.Close()
		return
	}
	ok := s.spawn(func() {
		defer s.refusing.Add(-1)
		c := conn
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second)) // fresh conn: cannot fail in a way that matters
		if directTLS {
			tc := tls.Server(conn, s.cfg.TLS)
			if err := tc.HandshakeContext(s.ctx); err != nil {
				conn.Close()
				return
			}
			c = tc
		}
		b := wire.StreamHeader(wire.NSClient, s.cfg.Domains[0], "", randomID(8))
		b = append(b, wire.StreamError(ref.Condition, "", ref.Text)...)
		_, _ = c.Write(b) // the peer may be gone; we close either way
		lingerClose(c)
	})
	if !ok {
		s.refusing.Add(-1)
		conn.Close()
	}
}

// serveConn owns one client connection from accept to close.
func (s *Server) serveConn(conn net.Conn, directTLS bool) {
	defer s.registerConn(conn)()
	c := &c2sConn{srv: s, raw: conn, log: s.log.With().Str("remote", conn.RemoteAddr().String()).Str("conn", randomID(4)).Logger()}
	defer c.endExchange() // a connection dropped mid-SASL gives its slot back
	c.ir = &idleReader{conn: conn, deadline: time.Now().Add(s.cfg.NegotiationTimeout)}
	c.conn = conn
	if directTLS {
		tc := tls.Server(conn, s.cfg.TLS)
		_ = conn.SetDeadline(time.Now().Add(s.cfg.NegotiationTimeout)) // on a fresh conn this cannot fail in a way that matters
		if err := tc.HandshakeContext(s.ctx); err != nil {
			c.log.Debug().Err(err).Msg("tls handshake")
			conn.Close()
			return
		}
		_ = conn.SetDeadline(time.Time{})
		c.conn = tc
		c.ir.conn = tc
		c.secure = true
	}
	c.br = bufio.NewReaderSize(c.ir, 4096)
	sess, err := c.negotiate()
	if err != nil {
		c.log.Debug().Err(err).Msg("negotiation ended")
		c.conn.Close()
		return
	}
	if sess == nil { // resumed onto an existing session
		return
	}
	sess.run()
}

// idleReader sets read deadlines under the decoder. During negotiation it
// enforces one absolute deadline; on a bound session it calls onIdle after
// idle of silence (the session pings) and fails the read only when a second
// period of pingTimeout passes without input. encoding/xml keeps the first
// read error forever, so timeouts must be handled here, below it.
type idleReader struct {
	conn        net.Conn
	deadline    time.Time // negotiation: absolute
	idle        time.Duration
	pingTimeout time.Duration
	onIdle      func()
	// closeAt (Unix ns, 0 = open) is the fixed deadline of a session that
	// is being closed with a stream error: never extended, never pinged.
	closeAt atomic.Int64
}

// closeBy makes reads fail at t at the latest, and interrupts a blocked one.
func (r *idleReader) closeBy(t time.Time) {
	r.closeAt.Store(t.UnixNano())
	_ = r.conn.SetReadDeadline(t) // fails only on a closed conn, which is what we want
}

func (r *idleReader) Read(p []byte) (int, error) {
	pinged := false
	for {
		var dl time.Time
		closing := r.closeAt.Load()
		switch {
		case closing != 0:
			dl = time.Unix(0, closing)
		case r.idle == 0:
			dl = r.deadline
		case pinged:
			dl = time.Now().Add(r.pingTimeout)
		default:
			dl = time.Now().Add(r.idle)
		}
		if err := r.conn.SetReadDeadline(dl); err != nil {
			return 0, err
		}
		n, err := r.conn.Read(p)
		if n > 0 || err == nil {
			return n, err
		}
		var ne net.Error
		if r.idle > 0 && !pinged && r.closeAt.Load() == 0 && errors.As(err, &ne) && ne.Timeout() {
			pinged = true
			r.onIdle()
			continue
		}
		return n, err
	}
}
