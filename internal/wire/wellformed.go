package wire

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
)

// The checks encoding/xml leaves out (it accepts all of these in Strict
// mode): namespace well-formedness (XML Namespaces 1.0 §§3–6: declared
// prefixes, reserved prefixes and names, no duplicate expanded attribute
// names, QNames), matching prefixes in end tags with raw tokens, white
// space between attributes (XML 1.0 [40]) and character references to
// characters outside XML 1.0 [2] Char (encoding/xml turns &#xD800; into
// U+FFFD).

// nsXMLNS is the namespace name bound to the xmlns prefix; nothing may be
// bound to it.
const nsXMLNS = "http://www.w3.org/2000/xmlns/"

// nsScope tracks the namespace declarations in scope and the open elements
// of one stream.
type nsScope struct {
	decls []nsDecl   // in scope, innermost last
	open  []openElem // open elements, the stream header first
	names []xml.Name // scratch: expanded attribute names of one start tag
}

type nsDecl struct{ prefix, uri string }

type openElem struct {
	name  xml.Name // as written: Space holds the prefix
	decls int      // len(decls) before this element's declarations
}

// push checks the start tag t (a raw token: Space holds the prefix) and
// brings its declarations into scope.
func (s *nsScope) push(t xml.StartElement) error {
	s.open = append(s.open, openElem{name: t.Name, decls: len(s.decls)})
	for _, a := range t.Attr {
		switch {
		case a.Name.Space == "xmlns":
			if err := checkDecl(a.Name.Local, a.Value); err != nil {
				return err
			}
			s.decls = append(s.decls, nsDecl{a.Name.Local, a.Value})
		case a.Name.Space == "" && a.Name.Local == "xmlns":
			if a.Value == NSXML || a.Value == nsXMLNS {
				return fmt.Errorf("reserved namespace %q as the default namespace", a.Value)
			}
			s.decls = append(s.decls, nsDecl{"", a.Value})
		}
	}
	if err := checkQName(t.Name); err != nil {
		return err
	}
	if t.Name.Space == "xmlns" {
		return fmt.Errorf("element <xmlns:%s> uses the reserved prefix xmlns", t.Name.Local)
	}
	if _, ok := s.lookup(t.Name.Space); !ok {
		return fmt.Errorf("undeclared prefix %q in element <%s:%s>", t.Name.Space, t.Name.Space, t.Name.Local)
	}
	s.names = s.names[:0]
	for _, a := range t.Attr {
		if err := checkQName(a.Name); err != nil {
			return err
		}
		n := a.Name
		switch {
		case n.Space == "xmlns" || (n.Space == "" && n.Local == "xmlns"):
			n = xml.Name{Space: nsXMLNS, Local: n.Space + ":" + n.Local}
		case n.Space != "":
			uri, ok := s.lookup(n.Space)
			if !ok {
				return fmt.Errorf("undeclared prefix %q in attribute %s:%s", n.Space, n.Space, n.Local)
			}
			n.Space = uri
		}
		s.names = append(s.names, n)
	}
	if hasDuplicate(s.names) {
		return errors.New("duplicate attribute")
	}
	return nil
}

// pop checks the end tag name (raw) against the innermost open element and
// drops that element's declarations.
func (s *nsScope) pop(name xml.Name) error {
	if len(s.open) == 0 {
		return fmt.Errorf("end tag </%s> without a start tag", name.Local)
	}
	top := s.open[len(s.open)-1]
	if top.name != name {
		return fmt.Errorf("end tag </%s:%s> does not match <%s:%s>", name.Space, name.Local, top.name.Space, top.name.Local)
	}
	s.open = s.open[:len(s.open)-1]
	s.decls = s.decls[:top.decls]
	return nil
}

// lookup returns the namespace name bound to prefix ("" for no prefix: the
// default namespace, "" if none is declared).
func (s *nsScope) lookup(prefix string) (string, bool) {
	if prefix == "xml" {
		return NSXML, true
	}
	for i := len(s.decls) - 1; i >= 0; i-- {
		if s.decls[i].prefix == prefix {
			return s.decls[i].uri, true
		}
	}
	return "", prefix == ""
}

// resolve returns the raw name and attributes of the start tag just pushed
// with namespaces resolved the way encoding/xml's Token does (declarations
// keep Space "xmlns", or Local "xmlns" for the default namespace).
func (s *nsScope) resolve(name xml.Name, attrs []xml.Attr) (xml.Name, []xml.Attr) {
	name.Space, _ = s.lookup(name.Space)
	out := make([]xml.Attr, len(attrs))
	copy(out, attrs)
	for i := range out {
		if sp := out[i].Name.Space; sp != "" && sp != "xmlns" {
			out[i].Name.Space, _ = s.lookup(sp)
		}
	}
	return name, out
}

// checkDecl applies XML Namespaces 1.0 §3 to xmlns:prefix='uri'.
func checkDecl(prefix, uri string) error {
	switch {
	case prefix == "xmlns":
		return errors.New("the prefix xmlns must not be declared")
	case uri == "":
		return fmt.Errorf("empty namespace name for prefix %q", prefix)
	case (prefix == "xml") != (uri == NSXML):
		return fmt.Errorf("prefix %q bound to %q: only xml may be bound to the XML namespace", prefix, uri)
	case uri == nsXMLNS:
		return fmt.Errorf("prefix %q bound to the xmlns namespace", prefix)
	}
	return nil
}

// checkQName rejects names encoding/xml let through that are no QName
// (":a", "a:", and in attributes "p:").
func checkQName(n xml.Name) error {
	if n.Local == "" || bytes.IndexByte([]byte(n.Local), ':') >= 0 {
		return fmt.Errorf("%q is not a qualified name", n.Space+":"+n.Local)
	}
	return nil
}

// hasDuplicate reports whether names holds a name twice.
func hasDuplicate(names []xml.Name) bool {
	if len(names) <= 16 {
		for i := range names {
			for j := i + 1; j < len(names); j++ {
				if names[i] == names[j] {
					return true
				}
			}
		}
		return false
	}
	seen := make(map[xml.Name]struct{}, len(names))
	for _, n := range names {
		if _, ok := seen[n]; ok {
			return true
		}
		seen[n] = struct{}{}
	}
	return false
}

// addressing names the attributes a receiver reads as a stanza's
// addressing when it matches attributes by local name only.
func addressing(local string) bool {
	switch local {
	case "to", "from", "id", "type", "lang":
		return true
	}
	return false
}

// checkAddressing refuses a top-level element (raw attributes) on which
// addressing could be read from anything but the unprefixed to, from, id,
// type and xml:lang: a prefixed attribute or a prefix declaration with
// such a local name (encoding/xml's Unmarshal matches `xml:"from,attr"`
// in any namespace).
func checkAddressing(attrs []xml.Attr) error {
	for _, a := range attrs {
		if a.Name.Space != "" && addressing(a.Name.Local) && (a.Name.Space != "xml" || a.Name.Local != "lang") {
			return fmt.Errorf("%w: attribute %s:%s on a top-level element", ErrInvalidXML, a.Name.Space, a.Name.Local)
		}
	}
	return nil
}

// spaceBetweenAttrs reports whether every attribute value in the start tag
// is followed by white space, '/' or '>' (encoding/xml accepts a='1'b='2').
// Quotes occur in a start tag only around attribute values.
func spaceBetweenAttrs(tag []byte) bool {
	for {
		i := bytes.IndexAny(tag, `'"`)
		if i < 0 {
			return true
		}
		j := bytes.IndexByte(tag[i+1:], tag[i])
		if j < 0 {
			return true // cannot happen: encoding/xml parsed the tag
		}
		tag = tag[i+j+2:]
		if len(tag) > 0 && !isSpace(tag[0]) && tag[0] != '/' && tag[0] != '>' {
			return false
		}
	}
}

var (
	cdataOpen  = []byte("<![CDATA[")
	cdataClose = []byte("]]>")
)

// validCharRefs reports whether every character reference in b (one
// well-formed element, or a start tag) names a character XML 1.0 allows.
// CDATA sections hold no references.
func validCharRefs(b []byte) bool {
	cdata := bytes.Index(b, cdataOpen)
	pos := 0
	for {
		i := bytes.IndexByte(b[pos:], '&')
		if i < 0 {
			return true
		}
		i += pos
		if cdata >= 0 && cdata < i {
			end := bytes.Index(b[cdata:], cdataClose)
			if end < 0 {
				return true // an unterminated CDATA section fails in encoding/xml
			}
			pos = cdata + end + len(cdataClose)
			if cdata = bytes.Index(b[pos:], cdataOpen); cdata >= 0 {
				cdata += pos
			}
			continue
		}
		pos = i + 1
		if pos < len(b) && b[pos] == '#' {
			j := bytes.IndexByte(b[pos:], ';')
			if j < 0 || !isXMLChar(parseCharRef(b[pos+1:pos+j])) {
				return false
			}
			pos += j + 1
		}
	}
}

// parseCharRef returns the code point of a reference's digits ("x41" or
// "65"), or -1 if they are not a number below 0x110000.
func parseCharRef(s []byte) rune {
	base := rune(10)
	if len(s) > 0 && s[0] == 'x' {
		base, s = 16, s[1:]
	}
	if len(s) == 0 {
		return -1
	}
	var r rune
	for _, c := range s {
		var v rune
		switch {
		case c >= '0' && c <= '9':
			v = rune(c - '0')
		case base == 16 && c >= 'a' && c <= 'f':
			v = rune(c-'a') + 10
		case base == 16 && c >= 'A' && c <= 'F':
			v = rune(c-'A') + 10
		default:
			return -1
		}
		r = r*base + v
		if r > 0x10FFFF {
			return -1
		}
	}
	return r
}

// isXMLChar is XML 1.0 [2] Char.
func isXMLChar(r rune) bool {
	return r == 0x9 || r == 0xA || r == 0xD ||
		(r >= 0x20 && r <= 0xD7FF) || (r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
}
