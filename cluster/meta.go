package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// NodeMeta holds the addresses a node advertises to the cluster (host:port
// each; empty when the node does not serve that protocol).
type NodeMeta struct {
	Name      string // member name (not encoded: memberlist carries it)
	C2S       string // client-to-server, STARTTLS
	C2STLS    string // client-to-server, direct TLS
	Component string // XEP-0114 components
	Link      string // node-to-node stanza link
	HTTP      string // HTTP API
}

// Load is a node's current load, gossiped in its metadata.
type Load struct {
	Sessions   int     // bound client sessions
	Components int     // connected component streams
	StanzaRate float64 // stanzas per second, recent average
	CPU        float64 // CPU use as a fraction of the machine, 0..1
}

// Node is one alive member as seen by this node.
type Node struct {
	NodeMeta
	Load  Load
	Alive bool
}

// Score ranks nodes for steering: lower is lighter. Sessions count one each,
// a component counts as 10 sessions, and full CPU counts as 1,000 sessions.
func (l Load) Score() float64 {
	return float64(l.Sessions) + 10*float64(l.Components) + 1000*l.CPU
}

const metaVersion = 1

// encodeMeta encodes m (without Name), the load and the node epoch:
// version byte, uvarint epoch, five uvarint-length strings, uvarint sessions,
// uvarint components, float32 rate, float32 CPU.
func encodeMeta(m NodeMeta, l Load, epoch int64) []byte {
	b := make([]byte, 0, 64+len(m.C2S)+len(m.C2STLS)+len(m.Component)+len(m.Link)+len(m.HTTP))
	b = append(b, metaVersion)
	b = binary.AppendUvarint(b, uint64(epoch))
	for _, s := range [...]string{m.C2S, m.C2STLS, m.Component, m.Link, m.HTTP} {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(max(l.Sessions, 0)))
	b = binary.AppendUvarint(b, uint64(max(l.Components, 0)))
	b = binary.BigEndian.AppendUint32(b, math.Float32bits(float32(l.StanzaRate)))
	b = binary.BigEndian.AppendUint32(b, math.Float32bits(float32(l.CPU)))
	return b
}

// decodeMeta is the inverse of encodeMeta.
func decodeMeta(b []byte) (m NodeMeta, l Load, epoch int64, err error) {
	if len(b) == 0 {
		return m, l, 0, errors.New("empty node metadata")
	}
	if b[0] != metaVersion {
		return m, l, 0, fmt.Errorf("node metadata version %d unsupported", b[0])
	}
	r := reader{b: b[1:]}
	epoch = int64(r.uvarint())
	for _, p := range [...]*string{&m.C2S, &m.C2STLS, &m.Component, &m.Link, &m.HTTP} {
		*p = r.string()
	}
	sessions, components := r.uvarint(), r.uvarint()
	l.StanzaRate = float64(math.Float32frombits(r.uint32()))
	l.CPU = float64(math.Float32frombits(r.uint32()))
	if r.err != nil {
		return m, l, 0, fmt.Errorf("node metadata: %w", r.err)
	}
	// A load that would rank the node below every honest one (negative,
	// NaN, infinite, or a count that wraps) is refused: steering and
	// /v1/connect would send every client to it.
	if sessions > maxMetaCount || components > maxMetaCount || !finiteNonNegative(l.StanzaRate) || !finiteNonNegative(l.CPU) {
		return m, Load{}, 0, fmt.Errorf("node metadata: implausible load (sessions %d, components %d, rate %v, cpu %v)", sessions, components, l.StanzaRate, l.CPU)
	}
	l.Sessions, l.Components = int(sessions), int(components)
	return m, l, epoch, nil
}

// maxMetaCount bounds the session and component counts a node may
// advertise (far above what one node holds).
const maxMetaCount = math.MaxInt32

// finiteNonNegative reports whether v is a usable load figure.
func finiteNonNegative(v float64) bool { return v >= 0 && !math.IsInf(v, 1) }
