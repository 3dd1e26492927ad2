package component

import (
	"bytes"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/embedded"
)

// inputConn is a net.Conn that reads a fixed input (then EOF) and records
// what is written; deadlines are no-ops (reads never block).
type inputConn struct {
	r   io.Reader
	out bytes.Buffer
}

func (c *inputConn) Read(p []byte) (int, error)            { return c.r.Read(p) }
func (c *inputConn) Write(p []byte) (int, error)           { return c.out.Write(p) }
func (c *inputConn) Close() error                          { return nil }
func (c *inputConn) LocalAddr() net.Addr                   { return &net.TCPAddr{} }
func (c *inputConn) RemoteAddr() net.Addr                  { return &net.TCPAddr{} }
func (c *inputConn) SetDeadline(time.Time) error           { return nil }
func (c *inputConn) SetReadDeadline(time.Time) error       { return nil }
func (c *inputConn) SetWriteDeadline(time.Time) error      { return nil }
func (nopRouter) RouteFromComponent(string, *wire.Element) {}

type nopRouter struct{}

// FuzzHandshake feeds arbitrary bytes to the accept side of XEP-0114 (stream
// header and handshake). Properties: nothing authenticates without the
// secret, and what the server writes is a well-formed stream header
// followed by a stream error.
func FuzzHandshake(f *testing.F) {
	st, err := embedded.Open(filepath.Join(f.TempDir(), "x.db"), embedded.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	m, err := New(Config{Addr: "127.0.0.1:0", Components: []Spec{{JID: "c.example.com", Secret: "s3cret"}}, Logger: zerolog.Nop()}, storage.Store(st), nopRouter{}, "n1")
	if err != nil {
		f.Fatal(err)
	}
	const hdr = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='c.example.com'>"
	f.Add([]byte(hdr + "<handshake>aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d</handshake>"))
	f.Add([]byte(hdr + "<handshake/>"))
	f.Add([]byte(hdr + "<handshake xmlns='urn:x'>x</handshake>"))
	f.Add([]byte(hdr + "<handshake><x/>a&amp;b<![CDATA[c]]></handshake>"))
	f.Add([]byte(hdr + "<message/>"))
	f.Add([]byte(hdr + "</stream:stream>"))
	f.Add([]byte("<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='c.example.com'>"))
	f.Add([]byte("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='\u00e9&#x1F600;'>"))
	f.Add([]byte("<stream xmlns='jabber:client' to='c.example.com'>"))
	f.Fuzz(func(t *testing.T, in []byte) {
		nc := &inputConn{r: bytes.NewReader(in)}
		c := newConn(m, nc)
		if err := c.negotiate(); err == nil {
			t.Fatalf("authenticated without the secret: %q", in)
		}
		out := nc.out.Bytes()
		if len(out) == 0 {
			return
		}
		d := wire.NewDecoder(bytes.NewReader(out), 0)
		if _, err := d.Header(); err != nil {
			t.Fatalf("our stream header %q: %v", out, err)
		}
		el, err := d.Next()
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, wire.ErrStreamEnd):
		case err != nil:
			t.Fatalf("our answer %q: %v", out, err)
		case el.Name.Local != "error" || el.Name.Space != wire.NSStream:
			t.Fatalf("our answer %q is no stream error", out)
		}
	})
}
