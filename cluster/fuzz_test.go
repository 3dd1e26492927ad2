package cluster

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"runtime"
	"testing"
	"time"
)

// FuzzReadFrame reads node-link frames from arbitrary bytes: every frame
// read writes back to the bytes it came from.
func FuzzReadFrame(f *testing.F) {
	var seed bytes.Buffer
	w := bufio.NewWriter(&seed)
	_ = writeFrame(w, frameStanza, appendString(nil, "bob@example.com/r"))
	_ = writeFrame(w, frameAck, binary.AppendUvarint(nil, 7))
	_ = writeFrame(w, frameSnapshotRequest, nil)
	_ = w.Flush()
	f.Add(seed.Bytes())
	f.Add([]byte{0, 0, 0, 0, 1})
	f.Add([]byte{0, 0, 0, 1, 9})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		rest := data
		for {
			typ, body, err := readFrame(r)
			if err != nil {
				return
			}
			var again bytes.Buffer
			w := bufio.NewWriter(&again)
			if err := writeFrame(w, typ, body); err != nil || w.Flush() != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(rest, again.Bytes()) {
				t.Fatalf("frame %v %q re-encodes as %q, input %q", typ, body, again.Bytes(), rest)
			}
			rest = rest[again.Len():]
		}
	})
}

// TestReadFrameAllocatesWhatArrives: a header that declares the largest
// frame, followed by a few bytes and the end of the stream, costs the
// reader about what arrived, not the declared length.
func TestReadFrameAllocatesWhatArrives(t *testing.T) {
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:4], maxFrame)
	hdr[4] = byte(frameStanza)
	data := append(hdr[:], "a few bytes"...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := readFrame(bufio.NewReader(bytes.NewReader(data)))
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: %v, want unexpected EOF", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("reading a truncated frame that declares %d bytes allocated %d bytes", maxFrame, grew)
	}
}

// FuzzSessionFrames decodes delta and snapshot bodies the way the link
// reader does and applies them to a directory: decoding is stable under
// re-encoding and applying never panics.
func FuzzSessionFrames(f *testing.F) {
	s1 := Session{JID: "alice@example.com/phone", Available: true, Show: "away", Status: "out", Priority: -5, Version: 42}
	s2 := Session{JID: "bob@example.com/desk", Deleted: true, Version: 43}
	delta := appendSession(appendSession(binary.AppendUvarint(nil, 2), s1), s2)
	f.Add(delta, uint64(1), uint64(50))
	f.Add(binary.AppendUvarint(nil, 1<<40), uint64(0), uint64(0))
	f.Add([]byte{1, 3, 0x80}, uint64(math.MaxUint64), uint64(0))
	f.Fuzz(func(t *testing.T, body []byte, floor, maxV uint64) {
		r := reader{b: body}
		n := r.uvarint()
		if n > uint64(len(body)) { // the link reader's bound
			return
		}
		var ss []Session
		for i := uint64(0); i < n && r.err == nil; i++ {
			ss = append(ss, r.session("peer"))
		}
		if r.err != nil {
			return
		}
		for _, s := range ss {
			r2 := reader{b: appendSession(nil, s)}
			if got := r2.session("peer"); r2.err != nil || got != s {
				t.Fatalf("session %+v re-decodes as %+v (%v)", s, got, r2.err)
			}
		}
		d := newDirectory()
		d.applyDelta("peer", ss, time.Now())
		d.applySnapshot("peer", floor, maxV, ss)
		d.applyDelta("peer", ss, time.Now())
	})
}

// FuzzDecodeMeta decodes gossiped node metadata: what decodes re-encodes
// to the same values.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta(NodeMeta{C2S: "10.0.0.1:5222", C2STLS: "10.0.0.1:5223", Component: "10.0.0.1:5347", Link: "10.0.0.1:7947", HTTP: "127.0.0.1:5280"},
		Load{Sessions: 1200, Components: 2, StanzaRate: 350.5, CPU: 0.4}, 1700000000))
	f.Add([]byte{metaVersion})
	// Regressions: loads that ranked a peer below every honest node.
	f.Add(encodeMeta(NodeMeta{}, Load{Sessions: -1}, 1))
	f.Add(encodeMeta(NodeMeta{}, Load{StanzaRate: -5, CPU: math.NaN()}, 1))
	f.Add([]byte{2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, l, epoch, err := decodeMeta(b)
		if err != nil {
			return
		}
		// A peer's load must not rank it below every honest node.
		if l.Sessions < 0 || l.Components < 0 || !(l.CPU >= 0) || !(l.StanzaRate >= 0) || math.IsInf(l.CPU, 0) || math.IsInf(l.StanzaRate, 0) {
			t.Fatalf("load %+v (score %v) from %x", l, l.Score(), b)
		}
		m2, l2, epoch2, err := decodeMeta(encodeMeta(m, l, epoch))
		if err != nil || m2 != m || epoch2 != epoch || l2.Sessions != l.Sessions || l2.Components != l.Components ||
			math.Float64bits(l2.StanzaRate) != math.Float64bits(l.StanzaRate) || math.Float64bits(l2.CPU) != math.Float64bits(l.CPU) {
			t.Fatalf("meta %+v %+v %d re-decodes as %+v %+v %d (%v)", m, l, epoch, m2, l2, epoch2, err)
		}
	})
}

// FuzzHandshakeFrames reads the link handshake's hello and proof from
// arbitrary bytes.
func FuzzHandshakeFrames(f *testing.F) {
	var b bytes.Buffer
	_ = writeHello(&b, "node-1", make([]byte, nonceSize))
	_ = writeProof(&b, make([]byte, 32))
	f.Add(b.Bytes())
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x10})
	f.Add([]byte(linkMagic + "\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		name, nonce, err := readHello(r)
		if err != nil {
			return
		}
		if len(name) > 255 || len(nonce) != nonceSize {
			t.Fatalf("hello: name %d bytes, nonce %d bytes", len(name), len(nonce))
		}
		mac, err := readProof(r)
		if err == nil && mac != nil && len(mac) != 32 {
			t.Fatalf("proof of %d bytes", len(mac))
		}
	})
}
