package server

import "testing"

func TestOriginID(t *testing.T) {
	for _, c := range []struct{ raw, want string }{
		{"<message id='1'><body>x</body></message>", ""},
		{"<message id='1'><origin-id xmlns='urn:xmpp:sid:0' id='o1'/></message>", "o1"},
		{"<message><r xmlns='urn:x'/><origin-id xmlns='urn:xmpp:sid:0' id='a&amp;b'/></message>", "a&b"},
		{"<message xmlns:s='urn:xmpp:sid:0'><s:origin-id id='p1'/></message>", "p1"},
		// Only a direct child counts: one inside a forwarded stanza is not the sender's.
		{"<message><forwarded xmlns='urn:xmpp:forward:0'><message><origin-id xmlns='urn:xmpp:sid:0' id='inner'/></message></forwarded></message>", ""},
		// Wrong namespace, no id, a stanza-id (assigned by a server, not the sender).
		{"<message><origin-id xmlns='urn:other' id='x'/></message>", ""},
		{"<message><origin-id xmlns='urn:xmpp:sid:0'/></message>", ""},
		{"<message><stanza-id xmlns='urn:xmpp:sid:0' id='s' by='x'/></message>", ""},
		// A prefixed id attribute is not the id.
		{"<message xmlns:j='urn:j'><origin-id xmlns='urn:xmpp:sid:0' j:id='x'/></message>", ""},
		{"<message><body>urn:xmpp:sid:0</body></message>", ""},
	} {
		if got := originID([]byte(c.raw)); got != c.want {
			t.Errorf("originID(%s) = %q, want %q", c.raw, got, c.want)
		}
	}
}
