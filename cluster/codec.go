package cluster

import (
	"encoding/binary"
	"errors"
)

// errShort is returned by reader when the input ends early.
var errShort = errors.New("truncated input")

// maxString bounds any decoded string (JIDs, status text, addresses).
const maxString = 1 << 16

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// reader decodes the compact binary encodings of this package. The first
// error sticks; later calls return zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(errShort)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(errShort)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail(errShort)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) uint32() uint32 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 4 {
		r.fail(errShort)
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) uint64() uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.fail(errShort)
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) string() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > maxString {
		r.fail(errors.New("string too long"))
		return ""
	}
	if n > uint64(len(r.b)) {
		r.fail(errShort)
		return ""
	}
	v := string(r.b[:n])
	r.b = r.b[n:]
	return v
}

// Session entry encoding, used by delta and snapshot frames:
// flags byte (bit0 available, bit1 deleted), uvarint version, JID, show,
// status (uvarint-length strings), varint priority. The owner node is the
// link peer and is not encoded.
const (
	flagAvailable = 1 << 0
	flagDeleted   = 1 << 1
)

func appendSession(b []byte, s Session) []byte {
	var f byte
	if s.Available {
		f |= flagAvailable
	}
	if s.Deleted {
		f |= flagDeleted
	}
	b = append(b, f)
	b = binary.AppendUvarint(b, s.Version)
	b = appendString(b, s.JID)
	b = appendString(b, s.Show)
	b = appendString(b, s.Status)
	return binary.AppendVarint(b, int64(s.Priority))
}

func (r *reader) session(node string) Session {
	f := r.byte()
	s := Session{
		Node:      node,
		Available: f&flagAvailable != 0,
		Deleted:   f&flagDeleted != 0,
	}
	s.Version = r.uvarint()
	s.JID = r.string()
	s.Show = r.string()
	s.Status = r.string()
	s.Priority = int(r.varint())
	return s
}
