package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/cluster"
	"xcollect.dev/xcollect/internal/config"
	"xcollect.dev/xcollect/server"
)

// clusterAdapter joins cluster.Cluster and server.Server: it is the
// server's view of the cluster (server.Cluster) and the cluster's three
// handlers (stanzas, directory events, control messages). Wiring only: no
// logic beyond translating types.
type clusterAdapter struct {
	c   *cluster.Cluster
	srv *server.Server
}

var (
	_ server.Cluster           = (*clusterAdapter)(nil)
	_ cluster.StanzaHandler    = (*clusterAdapter)(nil)
	_ cluster.DirectoryHandler = (*clusterAdapter)(nil)
	_ cluster.ControlHandler   = (*clusterAdapter)(nil)
)

// handlers returns the adapter as every handler of the cluster.
func (a *clusterAdapter) handlers() cluster.Handlers {
	return cluster.Handlers{Stanzas: a, Directory: a, Control: a}
}

func peer(s cluster.Session) server.PeerSession {
	return server.PeerSession{JID: s.JID, Node: s.Node, Available: s.Available, Show: s.Show, Status: s.Status, Priority: s.Priority, Version: s.Version}
}

func (a *clusterAdapter) Lookup(bare string) []server.PeerSession {
	list := a.c.Lookup(bare)
	out := make([]server.PeerSession, len(list))
	for i, s := range list {
		out[i] = peer(s)
	}
	return out
}

func (a *clusterAdapter) Route(node, to string, stanza []byte) error {
	return a.c.Route(node, to, stanza)
}

func (a *clusterAdapter) Nodes() []string {
	nodes := a.c.Nodes()
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Name
	}
	return out
}

func (a *clusterAdapter) Reachable(node string) bool { return a.c.LinkUp(node) }

func (a *clusterAdapter) Publish(p server.PeerSession) {
	a.c.UpsertLocal(cluster.Session{JID: p.JID, Available: p.Available, Show: p.Show, Status: p.Status, Priority: p.Priority})
}

func (a *clusterAdapter) Unpublish(full string) { a.c.RemoveLocal(full) }

func (a *clusterAdapter) HandleStanza(to string, stanza []byte) { a.srv.DeliverFromPeer(to, stanza) }

func (a *clusterAdapter) HandleSessionsGone(gone []cluster.Session) {
	out := make([]server.PeerSession, len(gone))
	for i, s := range gone {
		out[i] = peer(s)
	}
	a.srv.PeerSessionsGone(out)
}

func (a *clusterAdapter) HandleSessionUpdate(cluster.Session) {} // presence travels as stanzas

// HandleConflict closes the local session; the cluster has already
// dropped its entry without a tombstone.
func (a *clusterAdapter) HandleConflict(full string) { a.srv.Conflict(full) }

func (a *clusterAdapter) HandleUndelivered(to string, stanza []byte) { a.srv.Undeliverable(to, stanza) }

// clusterConfig translates the cluster section of the file.
func clusterConfig(f config.File, log zerolog.Logger) (cluster.Config, error) {
	c := cluster.DefaultConfig()
	c.NodeName = f.Node.Name
	c.Logger = log
	c.Join = f.Cluster.Join
	c.JoinDNS = f.Cluster.JoinDNS
	// Gossip and links listen on cluster.bind, else on the advertised
	// host; the link on its own port unless cluster.link names a host
	// (cluster.LinkAddr fills in an empty host).
	c.LinkAddr = f.Cluster.Link
	if f.Cluster.Advertise != "" {
		host, port, err := splitHostPort(f.Cluster.Advertise)
		if err != nil {
			return c, fmt.Errorf("cluster.advertise: %w", err)
		}
		c.AdvertiseAddr, c.AdvertisePort = host, port
		c.BindAddr = host
	}
	if f.Cluster.Bind != "" {
		host, port, err := splitHostPort(f.Cluster.Bind)
		if err != nil {
			return c, fmt.Errorf("cluster.bind: %w", err)
		}
		c.BindAddr, c.BindPort = host, port
	}
	if c.BindAddr == "" {
		return c, errors.New("cluster.bind: not set: set the address this node's gossip and links listen on, e.g. 10.0.0.1:7946 (0.0.0.0:7946 listens on all interfaces)")
	}
	if c.LinkAddr == "" {
		c.LinkAddr = net.JoinHostPort(c.BindAddr, strconv.Itoa(cluster.DefaultLinkPort))
	} else if host, port, err := net.SplitHostPort(c.LinkAddr); err == nil && host == "" {
		c.LinkAddr = net.JoinHostPort(c.BindAddr, port)
	}
	c.Insecure = f.Cluster.Insecure
	if f.Cluster.Key != "" {
		key, err := base64.StdEncoding.DecodeString(f.Cluster.Key)
		if err != nil {
			return c, fmt.Errorf("cluster.key: not base64: %w (make one with: head -c 32 /dev/urandom | base64)", err)
		}
		c.SecretKey = key
	}
	host := c.AdvertiseAddr
	if host == "" {
		host = c.BindAddr
	}
	addr := func(listen string) string {
		if listen == "" {
			return ""
		}
		_, port, err := net.SplitHostPort(listen)
		if err != nil {
			return ""
		}
		return net.JoinHostPort(host, port)
	}
	link := c.LinkAddr // a link on its own host is reached there, unless an advertise address says otherwise
	if lh, _, err := net.SplitHostPort(link); err != nil || c.AdvertiseAddr != "" || lh == "" || net.ParseIP(lh).IsUnspecified() {
		link = addr(link)
	}
	c.Meta = cluster.NodeMeta{Name: f.Node.Name, C2S: addr(*f.Listeners.C2S), C2STLS: addr(*f.Listeners.C2STLS),
		Component: addr(*f.Listeners.Component), Link: link, HTTP: addr(*f.Listeners.HTTP)}
	return c, c.Validate()
}

func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return host, port, nil
}

func (a *clusterAdapter) RouteAcked(node, to string, stanza []byte, done func(error)) error {
	return a.c.RouteAcked(node, to, stanza, done)
}

func (a *clusterAdapter) HandleStanzaAcked(to string, stanza []byte, ack func()) {
	a.srv.DeliverFromPeerAcked(to, stanza, ack)
}

func (a *clusterAdapter) SendControl(node string, kind byte, msg []byte) error {
	return a.c.SendControl(node, kind, msg)
}

func (a *clusterAdapter) SendControlAcked(node string, kind byte, msg []byte, done func(error)) error {
	return a.c.SendControlAcked(node, kind, msg, done)
}

func (a *clusterAdapter) HandleControl(from string, kind byte, msg []byte, ack func()) {
	a.srv.HandlePeerMessage(from, kind, msg, ack)
}
