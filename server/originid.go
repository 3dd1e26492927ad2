package server

import (
	"bytes"
	"encoding/xml"
)

// nsSID is XEP-0359 (unique and stable stanza ids).
const nsSID = "urn:xmpp:sid:0"

// originID returns the id of the <origin-id xmlns='urn:xmpp:sid:0'/> child
// of the stanza raw, "" when it has none. It is the only id a sender
// asserts unique across streams (XEP-0359 §3); the stanza id is unique
// only within one stream (RFC 6120 §8.1.3) and is never a dedupe key.
// Stanzas without the namespace are not parsed again.
func originID(raw []byte) string {
	if !bytes.Contains(raw, []byte(nsSID)) {
		return ""
	}
	d := xml.NewDecoder(bytes.NewReader(raw))
	depth := 0
	for {
		tok, err := d.Token()
		if err != nil {
			return ""
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 2 && t.Name.Space == nsSID && t.Name.Local == "origin-id" {
				for _, a := range t.Attr {
					if a.Name.Space == "" && a.Name.Local == "id" {
						return a.Value
					}
				}
				return ""
			}
		case xml.EndElement:
			depth--
			if depth == 0 {
				return ""
			}
		}
	}
}
