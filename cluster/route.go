package cluster

import (
	"bytes"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// the link dies first, handed back through StanzaHandler.HandleUndelivered.
// Route copies stanza.
func (c *Cluster) Route(node, to string, stanza []byte) error {
	l, err := c.linkFor(node, to)
	if err != nil {
		return err
	}
	if err := l.enqueue(outFrame{typ: frameStanza, to: to, body: bytes.Clone(stanza)}); err != nil {
		return fmt.Errorf("cluster: route %s to %s: %w", to, node, err)
	}
	return nil
}

// linkFor returns the link to node for a stanza to to.
func (c *Cluster) linkFor(node, to string) (*link, error) {
	if node == c.cfg.NodeName {
		return nil, fmt.Errorf("cluster: route %s to self: %w", to, ErrUnknownNode)
	}
	c.mu.RLock()
	l := c.links[node]
	closing := c.closing
	c.mu.RUnlock()
	if closing {
		return nil, fmt.Errorf("cluster: route %s: %w", to, ErrClosed)
	}
	if l == nil {
		if c.isAlive(node) {
			return nil, fmt.Errorf("cluster: route %s to %s: %w", to, node, ErrLinkDown)
		}
		return nil, fmt.Errorf("cluster: route %s to %s: %w", to, node, ErrUnknownNode)
	}
	return l, nil
}

// RouteAcked is Route with a receipt: done(nil) runs once the peer node
// delivered the stanza to a local session or stored it, done(err) when the
// link died first (the stanza may or may not have arrived: the caller falls
// back, at-least-once). done runs on a cluster goroutine and must not
// block. When RouteAcked returns an error, done is never called.
func (c *Cluster) RouteAcked(node, to string, stanza []byte, done func(error)) error {
	l, err := c.linkFor(node, to)
	if err != nil {
		return err
	}
	if err := l.enqueueAcked(outFrame{typ: frameStanzaAcked, to: to, body: bytes.Clone(stanza)}, done); err != nil {
		return fmt.Errorf("cluster: route %s to %s: %w", to, node, err)
	}
	return nil
}

// LinkUp reports whether node is an alive member with an open link to
// this node: stanzas routed to it now are likely to arrive.
func (c *Cluster) LinkUp(node string) bool {
	c.mu.RLock()
	l := c.links[node]
	c.mu.RUnlock()
	return l != nil && !l.isClosed() && c.isAlive(node)
}

func (c *Cluster) memberlist() *memberlist.Memberlist {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ml
}

func (c *Cluster) isAlive(node string) bool {
	_, ok := c.member(node)
	return ok
}

// SendControl queues control message msg of kind for node, where the
// ControlHandler receives it. Like Route it never blocks and returns
// ErrUnknownNode, ErrLinkDown or ErrQueueFull (wrapped) when the message
// cannot be queued; a message lost with its link is dropped (use
// SendControlAcked to learn of that). SendControl copies msg.
func (c *Cluster) SendControl(node string, kind byte, msg []byte) error {
	l, err := c.linkFor(node, controlTarget(kind))
	if err != nil {
		return err
	}
	if err := l.enqueue(outFrame{typ: frameControl, kind: kind, body: bytes.Clone(msg)}); err != nil {
		return fmt.Errorf("cluster: send %s to %s: %w", controlTarget(kind), node, err)
	}
	return nil
}

// SendControlAcked is SendControl with a receipt: done(nil) runs once the
// peer's ControlHandler acked the message, done(err) when the link died
// first (the message may or may not have arrived). done runs on a cluster
// goroutine and must not block. When SendControlAcked returns an error,
// done is never called.
func (c *Cluster) SendControlAcked(node string, kind byte, msg []byte, done func(error)) error {
	l, err := c.linkFor(node, controlTarget(kind))
	if err != nil {
		return err
	}
	if err := l.enqueueAcked(outFrame{typ: frameControlAcked, kind: kind, body: bytes.Clone(msg)}, done); err != nil {
		return fmt.Errorf("cluster: send %s to %s: %w", controlTarget(kind), node, err)
	}
	return nil
}

// controlTarget names a control message in errors.
func controlTarget(kind byte) string { return fmt.Sprintf("control message %d", kind) }
