package wire

import (
	"bytes"
	"encoding/xml"
)

// Stamp returns a copy of the element raw with its start tag's from and to
// attributes replaced (from "" removes from; to "" keeps the original to) and any
// content-namespace declaration (jabber:client, jabber:server,
// jabber:component:accept) removed, so the stanza takes the namespace of the
// stream it is written to. The element's content is copied byte for byte.
// raw must be a well-formed element as returned by Decoder.Next.
func Stamp(raw []byte, from, to string) []byte {
	name, attrs, rest := splitStart(raw)
	out := make([]byte, 0, len(raw)+len(from)+len(to)+16)
	out = append(out, '<')
	out = append(out, name...)
	if from != "" {
		out = appendAttr(out, "from", from)
	}
	if to != "" {
		out = appendAttr(out, "to", to)
	}
	for _, a := range attrs {
		switch {
		case a.name == "from" || (a.name == "to" && to != ""):
			continue
		case a.name == "xmlns" && isContentNS(a.value):
			continue
		}
		out = append(out, ' ')
		out = append(out, a.raw...)
	}
	return append(out, rest...)
}

func isContentNS(v string) bool {
	return v == NSClient || v == NSServer || v == NSComponent
}

type rawAttr struct {
	name  string
	value string // still escaped; compared only with plain namespace names
	raw   []byte // name="value" as written
}

// splitStart lexes the start tag of raw: the element name, its attributes,
// and everything from the closing '>' or '/>' on.
func splitStart(raw []byte) (name []byte, attrs []rawAttr, rest []byte) {
	i := 1 // past '<'
	for i < len(raw) && !isSpace(raw[i]) && raw[i] != '>' && raw[i] != '/' {
		i++
	}
	name = raw[1:i]
	for {
		for i < len(raw) && isSpace(raw[i]) {
			i++
		}
		if i >= len(raw) || raw[i] == '>' || raw[i] == '/' {
			return name, attrs, raw[i:]
		}
		ns := i
		for i < len(raw) && raw[i] != '=' && !isSpace(raw[i]) {
			i++
		}
		an := string(raw[ns:i])
		for i < len(raw) && (isSpace(raw[i]) || raw[i] == '=') {
			i++
		}
		if i >= len(raw) {
			return name, attrs, nil
		}
		q := raw[i]
		vs := i + 1
		j := bytes.IndexByte(raw[vs:], q)
		if j < 0 {
			return name, attrs, nil
		}
		i = vs + j + 1
		attrs = append(attrs, rawAttr{name: an, value: string(raw[vs : vs+j]), raw: raw[ns:i]})
	}
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

func appendAttr(out []byte, name, value string) []byte {
	out = append(out, ' ')
	out = append(out, name...)
	out = append(out, `="`...)
	out = appendEscaped(out, value)
	return append(out, '"')
}

// appendEscaped appends s escaped for an attribute value or text.
// Characters XML cannot carry (controls, invalid UTF-8) become U+FFFD.
func appendEscaped(out []byte, s string) []byte {
	if !needsEscape(s) {
		return append(out, s...)
	}
	var b bytes.Buffer
	// xml.EscapeText never fails on a bytes.Buffer.
	_ = xml.EscapeText(&b, []byte(s))
	return append(out, b.Bytes()...)
}

// needsEscape reports whether s holds anything but printable ASCII other
// than the five XML specials.
func needsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c >= 0x80, c == '<', c == '>', c == '&', c == '"', c == '\'':
			return true
		}
	}
	return false
}

// Escape returns s escaped for use in XML text or a quoted attribute value.
func Escape(s string) string { return string(appendEscaped(nil, s)) }
