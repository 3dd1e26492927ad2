// Package wire reads and writes XMPP streams as raw, byte-exact stanzas.
//
// The Decoder runs encoding/xml over a connection (no read-ahead beyond the
// bytes a token needs, so a stanza is returned as soon as its end tag
// arrives) and hands out each top-level element as an Element: the parsed
// start tag for routing decisions plus the exact bytes of the element, which
// are forwarded and stored verbatim. Stamp rewrites only the start tag (to
// and from, RFC 6120 §8.1.2.1). The Decoder enforces a size limit per
// top-level element and rejects DTDs, processing instructions and comments
// (RFC 6120 §11.1), another encoding than UTF-8 (§11.6), anything that is
// not well-formed XML 1.0 + Namespaces, including what encoding/xml lets
// through (wellformed.go), and top-level elements with addressing a
// receiver could read from anything but the unprefixed to, from, id, type
// and xml:lang. What it returns can therefore be relayed and stored
// verbatim without breaking or misleading a stricter receiver.
//
// This is the one place that knows the tokenizer; server, component and
// clients see Elements and bytes.
//
// Read first: Decoder, Element, Stamp.
package wire
