package wire

import (
	"errors"
	"io"
	"strings"
	"testing"
)

const header = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>`

func TestDecoderRawElements(t *testing.T) {
	in := header + " \n<message to='a@b' id='1'><body>hi &amp; bye</body><x xmlns='urn:x' a='1'/></message>  <iq type='get' id='2'/></stream:stream>"
	d := NewDecoder(strings.NewReader(in), 0)
	h, err := d.Header()
	if err != nil {
		t.Fatal(err)
	}
	if h.NS != NSClient || h.Name.Space != NSStream || h.To != "example.com" || h.Version != "1.0" {
		t.Fatalf("header = %+v", h)
	}
	el, err := d.Next()
	if err != nil {
		t.Fatal(err)
	}
	if want := "<message to='a@b' id='1'><body>hi &amp; bye</body><x xmlns='urn:x' a='1'/></message>"; string(el.Raw) != want {
		t.Fatalf("raw = %q", el.Raw)
	}
	if el.Name.Space != NSClient || el.Name.Local != "message" || el.Get("id") != "1" {
		t.Fatalf("el = %+v", el)
	}
	el, err = d.Next()
	if err != nil || string(el.Raw) != "<iq type='get' id='2'/>" {
		t.Fatalf("el = %q, %v", el.Raw, err)
	}
	if _, err := d.Next(); !errors.Is(err, ErrStreamEnd) {
		t.Fatalf("err = %v, want ErrStreamEnd", err)
	}
}

func TestDecoderErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		in    string
		limit int
		want  error
	}{
		"bad xml":   {header + "<message><body></message>", 0, ErrNotWellFormed},
		"too large": {header + "<message><body>" + strings.Repeat("x", 5000) + "</body></message>", 1000, ErrTooLarge},
		"comment":   {header + "<!-- hi --><message/>", 0, ErrRestricted},
		"pi":        {header + "<message><?x y?></message>", 0, ErrRestricted},
		"eof":       {header + "<message>", 0, io.ErrUnexpectedEOF},
	} {
		t.Run(name, func(t *testing.T) {
			d := NewDecoder(strings.NewReader(tc.in), tc.limit)
			if _, err := d.Header(); err != nil {
				t.Fatal(err)
			}
			_, err := d.Next()
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestDecoderNoReadAhead checks that a stanza is returned as soon as its end
// tag arrives, without waiting for more input (live streams).
func TestDecoderNoReadAhead(t *testing.T) {
	pr, pw := io.Pipe()
	d := NewDecoder(pr, 0)
	go func() {
		// The pipe write blocks until read; the decoder must not need more.
		_, _ = pw.Write([]byte(header + "<message id='x'/>"))
	}()
	if _, err := d.Header(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.Next()
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	pw.Close()
}

func TestStamp(t *testing.T) {
	for _, tc := range []struct{ in, from, to, want string }{
		{`<message to='x@y' from="evil@z" id='1'><body>a</body></message>`, "a@b/r", "", `<message from="a@b/r" to='x@y' id='1'><body>a</body></message>`},
		{`<message xmlns="jabber:client" to='x'/>`, "a@b", "c@d", `<message from="a@b" to="c@d"/>`},
		{`<iq type='get'
 id="q&amp;"><query xmlns='urn:x'/></iq>`, "a&b", "", `<iq from="a&amp;b" type='get' id="q&amp;"><query xmlns='urn:x'/></iq>`},
		{`<presence/>`, "a@b", "", `<presence from="a@b"/>`},
	} {
		got := string(Stamp([]byte(tc.in), tc.from, tc.to))
		if got != tc.want {
			t.Errorf("Stamp(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
