package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

const (
	dialBackoffMin = 50 * time.Millisecond
	dialBackoffMax = 5 * time.Second
	// linkStable is how long a link must live before backoff resets.
	linkStable = 5 * time.Second
)

// acceptLoop accepts inbound links until the listener closes.
func (c *Cluster) acceptLoop() {
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || c.ctx.Err() != nil {
				return
			}
			c.log.Warn().Err(err).Msg("link accept")
			t := time.NewTimer(100 * time.Millisecond)
			select {
			case <-c.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		if !c.spawn("link-in", func() { c.serveInbound(conn) }) {
			_ = conn.Close() // shutting down; nothing to report
		}
	}
}

func (c *Cluster) serveInbound(conn net.Conn) {
	stop := context.AfterFunc(c.ctx, func() { _ = conn.Close() }) // unblock the handshake on shutdown
	admit := func(peer string) error { return c.admit(c.ctx, peer, conn.RemoteAddr()) }
	lc, peer, err := acceptLink(c.ctx, conn, c.linkTLS, c.cfg.SecretKey, c.cfg.NodeName, admit)
	stop()
	if err != nil {
		c.log.Warn().Err(err).Str("peer", peer).Str("remote", conn.RemoteAddr().String()).Msg("link refused")
		_ = conn.Close() // refused; the reason is logged above
		return
	}
	c.runLink(c.ctx, peer, lc)
}

// memberGrace is how long an inbound link from a node that proved the key
// waits for memberlist to report it as a member (the join race: the dialer
// learnt of us a moment before we learnt of it). Past it the dialer is
// refused with ErrNotMember and retries with backoff. It must leave the
// dialer time to read the answer within handshakeTimeout.
const memberGrace = 2 * time.Second

// admit accepts an inbound link from peer only if peer is a current member
// and the link comes from its address: the member's gossip address or the
// host of the link address it advertises. A removed or departed node, or a
// key holder that never joined, is refused.
func (c *Cluster) admit(ctx context.Context, peer string, remote net.Addr) error {
	t := time.NewTimer(memberGrace)
	defer t.Stop()
	for {
		m, ok, changed := c.memberOrWait(peer)
		if ok {
			return checkMemberAddr(m, remote)
		}
		select {
		case <-changed:
		case <-t.C:
			return fmt.Errorf("%w: %s is not in the membership after %v", ErrNotMember, peer, memberGrace)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// checkMemberAddr reports whether remote (a link's source) is an address
// of member m.
func checkMemberAddr(m memberlist.Node, remote net.Addr) error {
	ta, ok := remote.(*net.TCPAddr)
	if !ok {
		return fmt.Errorf("%w: link from %v, not TCP", ErrNotMember, remote)
	}
	if ta.IP.Equal(m.Addr) {
		return nil
	}
	if meta, _, _, err := decodeMeta(m.Meta); err == nil {
		if host, _, err := net.SplitHostPort(meta.Link); err == nil {
			if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() && ip.Equal(ta.IP) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: link named %s comes from %s, the member is at %s", ErrNotMember, m.Name, ta.IP, m.Addr)
}

// ensureDialer starts the dial loop to peer (we dial peers whose name is
// greater than ours; they dial us otherwise).
func (c *Cluster) ensureDialer(peer string) {
	if c.cfg.NodeName >= peer {
		return
	}
	c.mu.Lock()
	if _, ok := c.dialers[peer]; ok || c.closing {
		c.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	c.dialers[peer] = cancel
	c.mu.Unlock()
	if !c.spawn("link-dial", func() { c.dialLoop(ctx, peer) }) {
		cancel()
	}
}

// stopPeer stops dialing peer, closes its link and waits (bounded) for the
// link's reader so that no late delta resurrects its entries.
func (c *Cluster) stopPeer(peer string) {
	c.mu.Lock()
	cancel := c.dialers[peer]
	delete(c.dialers, peer)
	l := c.links[peer]
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if l != nil {
		l.close()
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case <-l.readerDone:
		case <-t.C:
			c.log.Warn().Str("peer", peer).Msg("link reader slow to stop")
		}
	}
}

// dialLoop keeps a link to peer up while ctx lives, with exponential backoff.
func (c *Cluster) dialLoop(ctx context.Context, peer string) {
	log := c.log.With().Str("peer", peer).Logger()
	backoff := dialBackoffMin
	failing := false
	for ctx.Err() == nil {
		err := c.dialOnce(ctx, peer, &backoff)
		if err != nil && ctx.Err() == nil {
			if !failing {
				log.Warn().Err(err).Msg("link dial failed; retrying with backoff")
			} else {
				log.Debug().Err(err).Dur("backoff", backoff).Msg("link dial failed")
			}
			failing = true
		} else {
			failing = false
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, dialBackoffMax)
	}
}

func (c *Cluster) dialOnce(ctx context.Context, peer string, backoff *time.Duration) error {
	addr, err := c.peerLinkAddr(peer)
	if err != nil {
		return err
	}
	d := net.Dialer{Timeout: handshakeTimeout, LocalAddr: c.dialFrom} // from our address, which the peer checks
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() }) // unblock the handshake
	lc, err := dialLink(ctx, conn, c.linkTLS, c.cfg.SecretKey, c.cfg.NodeName, peer)
	stop()
	if err != nil {
		_ = conn.Close() // the handshake error is returned
		return fmt.Errorf("handshake with %s: %w", addr, err)
	}
	start := time.Now()
	c.runLink(ctx, peer, lc)
	if time.Since(start) > linkStable {
		*backoff = dialBackoffMin
	}
	return nil
}

// peerLinkAddr returns the link address peer advertises; an empty or
// unspecified host is replaced by the peer's memberlist address.
func (c *Cluster) peerLinkAddr(peer string) (string, error) {
	if m, ok := c.member(peer); ok {
		meta, _, _, err := decodeMeta(m.Meta)
		if err != nil {
			return "", fmt.Errorf("peer %s metadata: %w", peer, err)
		}
		host, port, err := net.SplitHostPort(meta.Link)
		if err != nil {
			return "", fmt.Errorf("peer %s link address %q: %w", peer, meta.Link, err)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = m.Addr.String()
		}
		if _, err := strconv.Atoi(port); err != nil {
			return "", fmt.Errorf("peer %s link port %q: %w", peer, port, err)
		}
		return net.JoinHostPort(host, port), nil
	}
	return "", fmt.Errorf("peer %s: %w", peer, ErrUnknownNode)
}

// runLink serves an authenticated connection (TLS with a key) until it dies
// or ctx ends. It replaces an older link to the same peer.
func (c *Cluster) runLink(ctx context.Context, peer string, conn net.Conn) {
	log := c.log.With().Str("peer", peer).Logger()
	l := newLink(peer, conn, c.cfg.LinkQueue, log)
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		_ = conn.Close() // shutting down
		return
	}
	old := c.links[peer]
	c.links[peer] = l
	c.mu.Unlock()
	if old != nil {
		old.close()
	}
	log.Info().Str("remote", conn.RemoteAddr().String()).Bool("tls", c.linkTLS != nil).Msg("link up")
	stop := context.AfterFunc(ctx, l.close)
	defer stop()

	writerDone := make(chan struct{})
	var undelivered []outFrame
	if !c.spawn("link-writer", func() {
		defer close(writerDone)
		undelivered = l.writeLoop(c.snapshotFrame)
	}) {
		l.close()
		close(writerDone)
	}
	c.readLoop(l)
	<-writerDone

	c.mu.Lock()
	if c.links[peer] == l {
		delete(c.links, peer)
	}
	c.mu.Unlock()
	log.Info().Int("undelivered", len(undelivered)).Msg("link down")
	for _, f := range undelivered {
		if f.typ == frameStanza { // acked ones are failed below
			c.h.Stanzas.HandleUndelivered(f.to, f.body)
		}
	}
	l.failPending()
}
