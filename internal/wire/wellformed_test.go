package wire

import (
	"encoding/xml"
	"errors"
	"strings"
	"testing"
)

// decodeOne decodes one element after the stream header.
func decodeOne(in string) (*Element, error) {
	d := NewDecoder(strings.NewReader(header+in), 0)
	if _, err := d.Header(); err != nil {
		return nil, err
	}
	return d.Next()
}

// TestDecoderPoison: input that is not well-formed XML 1.0 + Namespaces
// must be refused, however deep it sits; encoding/xml accepts every one of
// these, and a stricter receiver (expat, libxml2, ltx) drops its stream.
func TestDecoderPoison(t *testing.T) {
	for name, in := range map[string]string{
		"duplicate attribute":              `<message to='b@example.com' to='c@example.com'/>`,
		"duplicate attribute deep":         `<message><x xmlns='urn:x' a='1' a='2'/></message>`,
		"duplicate expanded attribute":     `<message><x xmlns:p='urn:u' xmlns:q='urn:u' p:a='1' q:a='2'/></message>`,
		"duplicate namespace declaration":  `<message><x xmlns:p='urn:u' xmlns:p='urn:v'/></message>`,
		"duplicate default declaration":    `<message><x xmlns='urn:u' xmlns='urn:v'/></message>`,
		"undeclared element prefix":        `<p:message/>`,
		"undeclared element prefix deep":   `<message><a><b><p:c/></b></a></message>`,
		"undeclared attribute prefix":      `<message p:x='1'/>`,
		"undeclared attribute prefix deep": `<message><a><b p:x='1'/></a></message>`,
		"prefix out of scope":              `<message><a xmlns:p='urn:u'/><p:b/></message>`,
		"surrogate character reference":    `<message><body>&#xD800;</body></message>`,
		"surrogate decimal reference":      `<message><body>&#57343;</body></message>`,
		"surrogate reference in attribute": `<message><x xmlns='urn:x' a='&#xDFFF;'/></message>`,
		"nul character reference":          `<message><body>&#x0;</body></message>`,
		"control character reference":      `<message><body>&#x1;</body></message>`,
		"fffe character reference":         `<message><body>&#xFFFE;</body></message>`,
		"out of range reference":           `<message><body>&#x110000;</body></message>`,
		"raw control character":            "<message><body>a\x01b</body></message>",
		"raw nul":                          "<message><body>a\x00b</body></message>",
		"raw invalid utf-8":                "<message><body>a\xffb</body></message>",
		"raw utf-8 surrogate":              "<message><body>a\xed\xa0\x80b</body></message>",
		"empty prefixed namespace":         `<message to='b@example.com' xmlns:j='' j:from='ceo@example.com/office'/>`,
		"empty prefixed namespace deep":    `<message><x xmlns:p=''/></message>`,
		"xml prefix rebound":               `<message><x xmlns:xml='urn:u'/></message>`,
		"xmlns prefix declared":            `<message><x xmlns:xmlns='urn:u'/></message>`,
		"xml namespace to other prefix":    `<message><x xmlns:p='http://www.w3.org/XML/1998/namespace'/></message>`,
		"xmlns namespace to a prefix":      `<message><x xmlns:p='http://www.w3.org/2000/xmlns/'/></message>`,
		"xmlns namespace as default":       `<message><x xmlns='http://www.w3.org/2000/xmlns/'/></message>`,
		"xml namespace as default":         `<message><x xmlns='http://www.w3.org/XML/1998/namespace'/></message>`,
		"xmlns element prefix":             `<message><xmlns:x/></message>`,
		"empty prefix in element name":     `<message><:x/></message>`,
		"empty local name in attribute":    `<message><x xmlns:p='urn:u' p:='1'/></message>`,
		"empty prefix in attribute":        `<message><x :a='1'/></message>`,
		"no space between attributes":      `<message to='b@example.com'id='1'/>`,
		"no space between attributes deep": `<message><x xmlns='urn:x' a="1"b='2'/></message>`,
		"end tag with other prefix":        `<message><p:x xmlns:p='urn:u' xmlns:q='urn:u'></q:x></message>`,
		"unknown entity":                   `<message><body>&nbsp;</body></message>`,
		"unescaped ampersand":              `<message><body>a & b</body></message>`,
		"unescaped lt in attribute":        `<message><x xmlns='urn:x' a='<'/></message>`,
	} {
		t.Run(name, func(t *testing.T) {
			el, err := decodeOne(in)
			if !errors.Is(err, ErrNotWellFormed) {
				t.Fatalf("err = %v, want ErrNotWellFormed (element %+v)", err, el)
			}
		})
	}
}

// TestDecoderSpoofedAddressing: a top-level element may carry addressing
// only as the unprefixed to, from, id, type and xml:lang. An attribute in
// another namespace with one of these local names is read as addressing by
// receivers that match attributes by local name (encoding/xml users), so
// it is refused as invalid XML for the jabber:client schema.
func TestDecoderSpoofedAddressing(t *testing.T) {
	for name, in := range map[string]string{
		"from in jabber:client":   `<message to='b@example.com' xmlns:j='jabber:client' j:from='ceo@example.com/office'/>`,
		"from in other namespace": `<message to='b@example.com' xmlns:j='urn:evil' j:from='ceo@example.com/office'/>`,
		"to in a namespace":       `<message xmlns:j='urn:evil' j:to='b@example.com'/>`,
		"id in a namespace":       `<iq type='get' xmlns:j='urn:evil' j:id='x'/>`,
		"type in a namespace":     `<message xmlns:j='urn:evil' j:type='groupchat'/>`,
		"xml:from":                `<message to='b@example.com' xml:from='ceo@example.com'/>`,
		"xml:id":                  `<message to='b@example.com' xml:id='x'/>`,
		"lang in a namespace":     `<message xmlns:j='urn:evil' j:lang='de'/>`,
		"prefix named from":       `<message to='b@example.com' xmlns:from='urn:x'/>`,
		"prefixed stanza":         `<c:message xmlns:c='jabber:client' c:from='ceo@example.com'/>`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := decodeOne(in)
			if !errors.Is(err, ErrInvalidXML) {
				t.Fatalf("err = %v, want ErrInvalidXML", err)
			}
		})
	}
}

// TestDecoderAcceptsNamespaces: what XML 1.0 + Namespaces allows still
// passes, byte for byte.
func TestDecoderAcceptsNamespaces(t *testing.T) {
	for _, in := range []string{
		`<message to='b@example.com' xml:lang='de' type='chat' id='1'><body>hallo</body></message>`,
		`<message><body><![CDATA[&#xD800; <not a tag> & ]]></body></message>`,
		`<message><x xmlns:p='urn:u' p:a='1' a='2'><p:y p:b='&#x10FFFF;&#x9;'/></x></message>`,
		`<message xmlns:p='urn:u' p:device='d1'><p:x/></message>`,
		`<c:message xmlns:c='jabber:client' to='b@example.com'><c:body>x</c:body></c:message>`,
		`<message><x xmlns='urn:a'><y xmlns='urn:b'/><z/></x><body>&lt;&gt;&amp;&quot;&apos;&#65;</body></message>`,
		`<message><x xmlns:p='urn:u'><p:y/></x><x xmlns:p='urn:v'><p:y/></x></message>`,
		`<message><x xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='en'/></message>`,
		`<message  to = 'b@example.com'	id="a'b"
 type='chat' />`,
		`<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>`,
	} {
		el, err := decodeOne(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if string(el.Raw) != in {
			t.Errorf("raw = %q, want %q", el.Raw, in)
		}
	}
}

// TestDecoderResolvesNames: the top-level element's name and attributes are
// namespace-resolved as encoding/xml resolves them.
func TestDecoderResolvesNames(t *testing.T) {
	el, err := decodeOne(`<c:message xmlns:c='jabber:client' xmlns:p='urn:u' to='b@example.com' p:x='1' xml:lang='en'/>`)
	if err != nil {
		t.Fatal(err)
	}
	if el.Name != (xml.Name{Space: NSClient, Local: "message"}) {
		t.Fatalf("name = %+v", el.Name)
	}
	want := []xml.Attr{
		{Name: xml.Name{Space: "xmlns", Local: "c"}, Value: NSClient},
		{Name: xml.Name{Space: "xmlns", Local: "p"}, Value: "urn:u"},
		{Name: xml.Name{Local: "to"}, Value: "b@example.com"},
		{Name: xml.Name{Space: "urn:u", Local: "x"}, Value: "1"},
		{Name: xml.Name{Space: NSXML, Local: "lang"}, Value: "en"},
	}
	if len(el.Attr) != len(want) {
		t.Fatalf("attr = %+v", el.Attr)
	}
	for i := range want {
		if el.Attr[i] != want[i] {
			t.Errorf("attr[%d] = %+v, want %+v", i, el.Attr[i], want[i])
		}
	}
	if el.Get("to") != "b@example.com" {
		t.Errorf("to = %q", el.Get("to"))
	}
}

// TestHeaderEncoding: a stream in another encoding than UTF-8 is refused
// with ErrUnsupportedEncoding (unsupported-encoding, RFC 6120 §4.9.3.22).
func TestHeaderEncoding(t *testing.T) {
	const rest = `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>`
	for _, tc := range []struct {
		decl string
		want error
	}{
		{`<?xml version='1.0' encoding='ISO-8859-1'?>`, ErrUnsupportedEncoding},
		{`<?xml version='1.0' encoding="UTF-16"?>`, ErrUnsupportedEncoding},
		{`<?xml version='1.0' encoding='UTF-8'?>`, nil},
		{`<?xml version='1.0' encoding='utf-8'?>`, nil},
		{``, nil},
		{"\xff\xfe<\x00?\x00", ErrUnsupportedEncoding},
		{`<?xml version='1.1'?>`, ErrNotWellFormed},
		{"\xfe\xff\x00<", ErrUnsupportedEncoding},
	} {
		d := NewDecoder(strings.NewReader(tc.decl+rest), 0)
		h, err := d.Header()
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.decl, err, tc.want)
			continue
		}
		if err == nil && (h.NS != NSClient || h.Name.Space != NSStream) {
			t.Errorf("%s: header = %+v", tc.decl, h)
		}
	}
}

// TestHeaderUndeclaredPrefix: the stream element's own prefix must be
// declared.
func TestHeaderUndeclaredPrefix(t *testing.T) {
	d := NewDecoder(strings.NewReader(`<stream:stream xmlns='jabber:client' to='example.com' version='1.0'>`), 0)
	if _, err := d.Header(); !errors.Is(err, ErrNotWellFormed) {
		t.Fatalf("err = %v, want ErrNotWellFormed", err)
	}
}
