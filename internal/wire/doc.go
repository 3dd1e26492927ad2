// Package wire reads and writes XMPP streams as raw, byte-exact stanzas.
//
// The Decoder runs encoding/xml over a connection (no read-ahead beyond the
// bytes a token needs, so a stanza is returned as soon as its end tag
// arrives) and hands out each top-level element as an Element: the parsed
// start tag for routing decisions plus the exact bytes of the element, which
// are forwarded and stored verbatim. Stamp rewrites only the start tag (to
// and from, RFC 6120 §8.1.2.1). The Decoder enforces a size limit per
// top-level element and rejects DTDs, processing instructions and comments
// (RFC 6120 §11.1).
//
// This is the one place that knows the tokenizer; server, component and
// clients see Elements and bytes.
//
// Read first: Decoder, Element, Stamp.
package wire
