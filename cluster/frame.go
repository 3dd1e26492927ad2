package cluster

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// The link protocol. Every frame is a 4-byte big-endian length (of what
// follows it), a type byte, and a body:
//
//	delta             uvarint count, sessions (codec.go)
//	snapshot          uvarint clock, uvarint newest version, uvarint count, sessions
//	snapshot-request  empty
//	stanza            uvarint-length target JID, stanza bytes
//	stanza-acked      uvarint seq, uvarint-length target JID, stanza bytes
//	ack               uvarint seq: the receipt of an acked stanza or control message
//	control           kind byte, message
//	control-acked     uvarint seq, kind byte, message
//
// Control messages are the user's protocol between nodes (the server's is
// in server/peer_protocol.go): this package carries them without looking
// inside and hands them to the ControlHandler. Acked frames (stanza or
// control) share one sequence per link. The handshake that precedes the
// frames is in handshake.go.

// frameType is the first byte of every link frame.
type frameType byte

const (
	frameDelta           frameType = 1 // owner's changed sessions
	frameSnapshot        frameType = 2 // owner's complete session list
	frameSnapshotRequest frameType = 3 // "send me your snapshot"
	frameStanza          frameType = 4 // a routed stanza for a local target
	frameStanzaAcked     frameType = 5 // a routed stanza whose receipt is wanted
	frameAck             frameType = 6 // receipt of an acked stanza or control message
	frameControl         frameType = 7 // a control message between nodes
	frameControlAcked    frameType = 8 // a control message whose receipt is wanted
)

func (t frameType) String() string {
	switch t {
	case frameDelta:
		return "delta"
	case frameSnapshot:
		return "snapshot"
	case frameSnapshotRequest:
		return "snapshot-request"
	case frameStanza:
		return "stanza"
	case frameStanzaAcked:
		return "stanza-acked"
	case frameAck:
		return "ack"
	case frameControl:
		return "control"
	case frameControlAcked:
		return "control-acked"
	}
	return fmt.Sprintf("frame(%d)", byte(t))
}

const (
	// maxFrame bounds one frame (a 1M-entry snapshot is about 50 MB).
	maxFrame = 128 << 20
	// handshakeTimeout bounds the link handshake.
	handshakeTimeout = 5 * time.Second
	linkMagic        = "XCL1"
	nonceSize        = 32
)

// outFrame is a queued frame. Stanza frames keep their target so that they
// can be reported undelivered if the link dies.
type outFrame struct {
	typ  frameType
	to   string // stanza frames only
	kind byte   // control frames only
	seq  uint64 // acked frames only (assigned by link.enqueueAcked)
	body []byte
}

func isStanzaFrame(t frameType) bool  { return t == frameStanza || t == frameStanzaAcked }
func isControlFrame(t frameType) bool { return t == frameControl || t == frameControlAcked }
func isAckedFrame(t frameType) bool   { return t == frameStanzaAcked || t == frameControlAcked }

// writeOut writes f with the header fields of its type before its body.
func writeOut(w *bufio.Writer, f outFrame) error {
	if !isStanzaFrame(f.typ) && !isControlFrame(f.typ) {
		return writeFrame(w, f.typ, f.body)
	}
	var hdr [5]byte
	var fields []byte
	if isAckedFrame(f.typ) {
		fields = binary.AppendUvarint(fields, f.seq)
	}
	if isStanzaFrame(f.typ) {
		fields = binary.AppendUvarint(fields, uint64(len(f.to)))
	} else {
		fields = append(fields, f.kind)
	}
	n := 1 + len(fields) + len(f.to) + len(f.body)
	binary.BigEndian.PutUint32(hdr[:4], uint32(n))
	hdr[4] = byte(f.typ)
	w.Write(hdr[:])     //nolint:errcheck // bufio.Writer keeps the first error; Flush reports it
	w.Write(fields)     //nolint:errcheck // see above
	w.WriteString(f.to) //nolint:errcheck // see above (empty for control frames)
	_, err := w.Write(f.body)
	return err
}

func writeFrame(w *bufio.Writer, t frameType, body []byte) error {
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(1+len(body)))
	hdr[4] = byte(t)
	w.Write(hdr[:]) //nolint:errcheck // bufio.Writer keeps the first error
	_, err := w.Write(body)
	return err
}

// frameInitialBuffer is what readFrame reserves before a body arrives.
const frameInitialBuffer = 64 << 10

// readFrame reads one frame; body is freshly allocated.
func readFrame(r *bufio.Reader) (frameType, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 1 || n > maxFrame {
		return 0, nil, fmt.Errorf("frame length %d out of range", n)
	}
	// Memory grows with the bytes that really arrive, not with the length a
	// peer declares: a header alone cannot make the node allocate maxFrame.
	var body bytes.Buffer
	body.Grow(int(min(n-1, frameInitialBuffer)))
	if _, err := io.CopyN(&body, r, int64(n-1)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("frame body: %w", err)
	}
	return frameType(hdr[4]), body.Bytes(), nil
}
