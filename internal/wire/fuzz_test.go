package wire

import (
	"bytes"
	"encoding/xml"
	"io"
	"testing"
	"unicode/utf8"
)

// FuzzDecoder feeds arbitrary stream content split in two writes. Every
// element the Decoder returns must re-parse to the same name and
// attributes, and after Stamp it must re-parse with the stamped sender as
// the only from any encoding/xml reader sees.
func FuzzDecoder(f *testing.F) {
	f.Add([]byte("<message to='a@b'><body>x</body></message>"), 10)
	f.Add([]byte("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq> <presence/>"), 3)
	f.Add([]byte("<a><b></a>"), 2)
	f.Add([]byte("<message to='bob@b' xmlns:j='' j:from='ceo@b/office'/>"), 5)
	f.Add([]byte("<message to='bob@b' xmlns:j='jabber:client' j:from='ceo@b/office'/>"), 5)
	f.Add([]byte("<message to='bob@b' xml:lang='en' xmlns:p='urn:p' p:x='1'><p:y a='&#x10FFFF;'/></message>"), 7)
	f.Add([]byte("<message to='b' to='c'/><message><body>&#xD800;</body></message>"), 1)
	f.Add([]byte("<message><body><![CDATA[&#xD800;]]></body></message>"), 20)
	f.Add([]byte("<c:message xmlns:c='jabber:client' from='x' xmlns='jabber:client'><c:body>x</c:body></c:message>"), 9)
	f.Add([]byte(benchStanza), 100)
	f.Fuzz(func(t *testing.T, body []byte, split int) {
		in := append([]byte(header), body...)
		if split < 0 || split > len(in) {
			split = len(in) / 2
		}
		pr, pw := io.Pipe()
		go func() {
			_, _ = pw.Write(in[:split])
			_, _ = pw.Write(in[split:])
			pw.Close()
		}()
		defer pr.Close()
		d := NewDecoder(pr, 1<<16)
		if _, err := d.Header(); err != nil {
			return
		}
		for i := 0; i < 100; i++ {
			el, err := d.Next()
			if err != nil {
				return
			}
			checkElement(t, el)
		}
	})
}

// FuzzStamp stamps arbitrary elements with arbitrary addresses.
func FuzzStamp(f *testing.F) {
	f.Add([]byte("<message to='x@y' from=\"evil@z\" id='1'><body>a</body></message>"), "a@b/r", "")
	f.Add([]byte("<message xmlns=\"jabber:client\" to='x'/>"), "a@b", "c@d")
	f.Add([]byte("<iq type='get'\n id=\"q&amp;\"><query xmlns='urn:x'/></iq>"), "a&b", "")
	f.Add([]byte("<presence  from = 'x' />"), "a@b", "c'd\"e")
	f.Add([]byte("<message xmlns:p='urn:p' p:a='1' from='x'/>"), "", "t@d")
	f.Fuzz(func(t *testing.T, raw []byte, from, to string) {
		el, err := decodeOne(string(raw))
		if err != nil {
			return
		}
		st := Stamp(el.Raw, from, to)
		got, err := decodeOne(string(st))
		if err != nil {
			t.Fatalf("Stamp(%q, %q, %q) = %q: %v", el.Raw, from, to, st, err)
		}
		if got.Name != el.Name {
			t.Fatalf("name %v became %v in %q", el.Name, got.Name, st)
		}
		wantFrom, wantTo := xmlString(from), el.Get("to")
		if to != "" {
			wantTo = xmlString(to)
		}
		if got.Get("from") != wantFrom || got.Get("to") != wantTo {
			t.Fatalf("Stamp(%q, %q, %q) = %q: from %q, to %q", el.Raw, from, to, st, got.Get("from"), got.Get("to"))
		}
		checkElement(t, got)
	})
}

// checkElement checks the properties of an element the Decoder returned.
func checkElement(t *testing.T, el *Element) {
	t.Helper()
	again, err := decodeOne(string(el.Raw))
	if err != nil {
		t.Fatalf("%q does not re-parse: %v", el.Raw, err)
	}
	if again.Name != el.Name || len(again.Attr) != len(el.Attr) {
		t.Fatalf("%q re-parses as %v %v, was %v %v", el.Raw, again.Name, again.Attr, el.Name, el.Attr)
	}
	for i := range el.Attr {
		if again.Attr[i] != el.Attr[i] {
			t.Fatalf("%q: attribute %v re-parses as %v", el.Raw, el.Attr[i], again.Attr[i])
		}
	}
	const from = "stamped@example.com/r"
	st := Stamp(el.Raw, from, "")
	stamped, err := decodeOne(string(st))
	if err != nil {
		t.Fatalf("stamped %q: %v", st, err)
	}
	// What an encoding/xml reader (mellium) takes for the sender.
	var addr struct {
		From string `xml:"from,attr"`
	}
	if err := xml.Unmarshal(st, &addr); err != nil {
		t.Fatalf("encoding/xml cannot read stamped %q: %v", st, err)
	}
	if addr.From != from || stamped.Get("from") != from {
		t.Fatalf("stamped %q reads as from %q", st, addr.From)
	}
	for _, a := range stamped.Attr {
		if addressing(a.Name.Local) && a.Name.Space != "" && a.Name != (xml.Name{Space: NSXML, Local: "lang"}) {
			t.Fatalf("stamped %q keeps addressing attribute %v", st, a.Name)
		}
	}
}

// xmlString is s as an XML reader gets it back after escaping: characters
// XML cannot carry become U+FFFD.
func xmlString(s string) string {
	var b bytes.Buffer
	for _, r := range s {
		if r == utf8.RuneError || !isXMLChar(r) {
			r = '\uFFFD'
		}
		b.WriteRune(r)
	}
	return b.String()
}
