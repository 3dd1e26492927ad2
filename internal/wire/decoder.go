package wire

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
)

// Namespaces used on the wire.
const (
	NSStream    = "http://etherx.jabber.org/streams"
	NSClient    = "jabber:client"
	NSServer    = "jabber:server"
	NSComponent = "jabber:component:accept"
	NSTLS       = "urn:ietf:params:xml:ns:xmpp-tls"
	NSSASL      = "urn:ietf:params:xml:ns:xmpp-sasl"
	NSBind      = "urn:ietf:params:xml:ns:xmpp-bind"
	NSSession   = "urn:ietf:params:xml:ns:xmpp-session"
	NSStanzas   = "urn:ietf:params:xml:ns:xmpp-stanzas"
	NSStreams   = "urn:ietf:params:xml:ns:xmpp-streams"
	NSSM        = "urn:xmpp:sm:3"
	NSXML       = "http://www.w3.org/XML/1998/namespace"
)

// Errors returned by the Decoder and the RFC 6120 §4.9.3 stream errors
// they map to: ErrTooLarge policy-violation, ErrRestricted restricted-xml,
// ErrNotWellFormed not-well-formed, ErrInvalidXML invalid-xml,
// ErrUnsupportedEncoding unsupported-encoding.
var (
	ErrTooLarge   = errors.New("wire: element exceeds the size limit")
	ErrRestricted = errors.New("wire: restricted XML (DTD, comment or processing instruction)")
	ErrStreamEnd  = errors.New("wire: stream closed by peer")
	// ErrNotWellFormed wraps encoding/xml syntax errors and the XML 1.0 +
	// Namespaces violations encoding/xml lets through (wellformed.go).
	ErrNotWellFormed = errors.New("wire: not well-formed")
	// ErrInvalidXML: well-formed, but an attribute on a stanza's top-level
	// element that a receiver could read as addressing (invalid-xml).
	ErrInvalidXML = errors.New("wire: invalid XML")
	// ErrUnsupportedEncoding: the XML declaration names another encoding
	// than UTF-8 (unsupported-encoding).
	ErrUnsupportedEncoding = errors.New("wire: unsupported encoding")
)

// Element is one top-level element of a stream.
type Element struct {
	// Name is the namespace-resolved element name.
	Name xml.Name
	// Attr are the start tag's attributes as encoding/xml parsed them.
	Attr []xml.Attr
	// Raw holds the exact bytes of the whole element. It stays valid after
	// the next call to Next.
	Raw []byte
}

// Get returns the value of the unqualified attribute local ("" if absent).
func (e *Element) Get(local string) string {
	return attr(e.Attr, local)
}

func attr(as []xml.Attr, local string) string {
	for _, a := range as {
		if a.Name.Local == local && a.Name.Space == "" {
			return a.Value
		}
	}
	return ""
}

// Header is a peer's stream header.
type Header struct {
	Name    xml.Name // must be {NSStream stream}
	NS      string   // the default namespace (content namespace)
	To      string
	From    string
	ID      string
	Version string
	Lang    string
}

// recorder is the io.ByteReader under encoding/xml: it keeps the bytes read
// since base and counts them against the limit. encoding/xml reads an
// io.ByteReader directly, without a read-ahead buffer of its own.
type recorder struct {
	r       *bufio.Reader
	buf     []byte // bytes from stream offset base on
	base    int64
	limit   int
	counted int
	err     error // ErrTooLarge, sticky
	readErr error // the last error of the connection
}

func (r *recorder) ReadByte() (byte, error) {
	if r.err != nil {
		return 0, r.err
	}
	b, err := r.r.ReadByte()
	if err != nil {
		r.readErr = err
		return 0, err
	}
	r.buf = append(r.buf, b)
	r.counted++
	if r.limit > 0 && r.counted > r.limit {
		r.err = ErrTooLarge
		return 0, r.err
	}
	return b, nil
}

// Read satisfies io.Reader; encoding/xml uses ReadByte.
func (r *recorder) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = b
	return 1, nil
}

// discard forgets recorded bytes before stream offset off.
func (r *recorder) discard(off int64) {
	n := int(off - r.base)
	if n <= 0 {
		return
	}
	if n >= len(r.buf) {
		if cap(r.buf) > maxIdleBuf {
			r.buf = nil // do not keep a huge stanza's buffer for the session's life
		} else {
			r.buf = r.buf[:0]
		}
	} else {
		r.buf = append(r.buf[:0], r.buf[n:]...)
	}
	r.base = off
}

// maxIdleBuf is the largest recording buffer kept between stanzas.
const maxIdleBuf = 16 << 10

// Decoder reads one stream. It is not safe for concurrent use: one read loop
// owns it.
type Decoder struct {
	rec recorder
	d   *xml.Decoder
	ns  nsScope
}

// NewDecoder returns a Decoder reading from r. limit bounds the bytes of one
// top-level element (and of the stream header); 0 means no limit.
func NewDecoder(r io.Reader, limit int) *Decoder {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 4096)
	}
	d := &Decoder{rec: recorder{r: br, limit: limit}}
	d.d = xml.NewDecoder(&d.rec)
	d.d.Strict = true
	d.d.CharsetReader = func(string, io.Reader) (io.Reader, error) { return nil, ErrUnsupportedEncoding }
	return d
}

// Buffered reports how many bytes were read from the connection but not yet
// consumed (bytes a peer pipelined).
func (d *Decoder) Buffered() int { return d.rec.r.Buffered() }

// SetLimit changes the per-element size limit.
func (d *Decoder) SetLimit(n int) { d.rec.limit = n }

// Header reads the XML declaration (optional) and the stream header.
func (d *Decoder) Header() (Header, error) {
	d.rec.counted = 0
	if b, err := d.rec.r.Peek(2); err == nil && isUTF16(b) {
		return Header{}, fmt.Errorf("%w: UTF-16", ErrUnsupportedEncoding)
	}
	for {
		start := d.d.InputOffset()
		tok, err := d.token(start)
		if err != nil {
			return Header{}, err
		}
		switch t := tok.(type) {
		case xml.ProcInst:
			if t.Target != "xml" {
				return Header{}, ErrRestricted
			}
		case xml.CharData:
			// whitespace before the header
		case xml.StartElement:
			if !validCharRefs(d.rec.buf[start-d.rec.base:]) {
				return Header{}, fmt.Errorf("%w: character reference to a character XML does not allow", ErrNotWellFormed)
			}
			t.Name, t.Attr = d.ns.resolve(t.Name, t.Attr)
			h := Header{Name: t.Name, Version: attr(t.Attr, "version"), To: attr(t.Attr, "to"),
				From: attr(t.Attr, "from"), ID: attr(t.Attr, "id")}
			for _, a := range t.Attr {
				switch {
				case a.Name.Space == "" && a.Name.Local == "xmlns":
					h.NS = a.Value
				case a.Name.Space == NSXML && a.Name.Local == "lang":
					h.Lang = a.Value
				}
			}
			d.rec.discard(d.d.InputOffset())
			return h, nil
		default:
			return Header{}, ErrRestricted
		}
	}
}

// isUTF16 reports whether a stream starting with b is UTF-16: a byte order
// mark, or a NUL byte next to the first character.
func isUTF16(b []byte) bool {
	return (b[0] == 0xFE && b[1] == 0xFF) || (b[0] == 0xFF && b[1] == 0xFE) || b[0] == 0 || b[1] == 0
}

// Next returns the next top-level element. Whitespace between elements is
// skipped (keepalives). It returns ErrStreamEnd when the peer closes its
// stream with </stream:stream>.
//
// Every element is checked for XML 1.0 + Namespaces well-formedness beyond
// what encoding/xml checks (ErrNotWellFormed), and the top-level element
// for attributes a receiver could take for addressing (ErrInvalidXML), so
// that what the Decoder returns can be relayed and stored as it is.
func (d *Decoder) Next() (*Element, error) {
	for {
		start := d.d.InputOffset()
		d.rec.discard(start)
		d.rec.counted = len(d.rec.buf)
		tok, err := d.token(start)
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.CharData:
			continue
		case xml.EndElement:
			return nil, ErrStreamEnd
		case xml.StartElement:
			if err := checkAddressing(t.Attr); err != nil {
				return nil, err
			}
			name, attrs := d.ns.resolve(t.Name, t.Attr)
			el := &Element{Name: name, Attr: attrs}
			if err := d.skip(); err != nil {
				return nil, err
			}
			end := d.d.InputOffset()
			el.Raw = append([]byte(nil), d.rec.buf[start-d.rec.base:end-d.rec.base]...)
			d.rec.discard(end)
			if !validCharRefs(el.Raw) {
				return nil, fmt.Errorf("%w: character reference to a character XML does not allow", ErrNotWellFormed)
			}
			return el, nil
		default:
			return nil, ErrRestricted
		}
	}
}

// skip consumes tokens up to the end of the element just started.
func (d *Decoder) skip() error {
	depth := 1
	for depth > 0 {
		tok, err := d.token(d.d.InputOffset())
		if err != nil {
			return err
		}
		switch tok.(type) {
		case xml.StartElement:
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
		default:
			return ErrRestricted
		}
	}
	return nil
}

// token returns the next raw token (names not resolved) after checking the
// namespace rules on start and end tags; start is the stream offset where
// the token begins.
func (d *Decoder) token(start int64) (xml.Token, error) {
	tok, err := d.d.RawToken()
	if err != nil {
		if err == io.EOF && len(d.ns.open) > 0 {
			err = io.ErrUnexpectedEOF // inside the stream element
		}
		return nil, d.wrapErr(err)
	}
	switch t := tok.(type) {
	case xml.StartElement:
		if len(t.Attr) > 1 && !spaceBetweenAttrs(d.rec.buf[start-d.rec.base:d.d.InputOffset()-d.rec.base]) {
			return nil, fmt.Errorf("%w: no white space between attributes", ErrNotWellFormed)
		}
		if err := d.ns.push(t); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNotWellFormed, err)
		}
	case xml.EndElement:
		if err := d.ns.pop(t.Name); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNotWellFormed, err)
		}
	}
	return tok, nil
}

func (d *Decoder) wrapErr(err error) error {
	if d.rec.err != nil {
		return d.rec.err
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return err
	}
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		if se.Msg == "unexpected EOF" {
			return io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%w: %v", ErrNotWellFormed, err)
	}
	if errors.Is(err, ErrUnsupportedEncoding) || (d.rec.readErr != nil && errors.Is(err, d.rec.readErr)) {
		return err
	}
	// encoding/xml's own plain errors: an XML declaration with another
	// version than 1.0
	return fmt.Errorf("%w: %v", ErrNotWellFormed, err)
}

// Parse returns the Element of one standalone element (no stream header).
func Parse(raw []byte) (*Element, error) {
	return NewDecoder(bytes.NewReader(raw), 0).Next()
}
