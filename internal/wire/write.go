package wire

import "strconv"

// Stream error conditions of RFC 6120 §4.9.3 used by xcollect.
const (
	BadFormat              = "bad-format"
	Conflict               = "conflict"
	ConnectionTimeout      = "connection-timeout"
	HostUnknown            = "host-unknown"
	InternalServerError    = "internal-server-error"
	InvalidNamespace       = "invalid-namespace"
	NotAuthorized          = "not-authorized"
	NotWellFormed          = "not-well-formed"
	PolicyViolation        = "policy-violation"
	ResourceConstraint     = "resource-constraint"
	SeeOtherHost           = "see-other-host"
	SystemShutdown         = "system-shutdown"
	UnsupportedStanzaType  = "unsupported-stanza-type"
	UnsupportedVersion     = "unsupported-version"
	UnsupportedFeature     = "unsupported-feature"
	UndefinedCondition     = "undefined-condition"
	RestrictedXML          = "restricted-xml"
	InvalidXML             = "invalid-xml"
	StreamUnsupportedEncod = "unsupported-encoding"
)

// StreamHeader returns our stream header for a response stream. ns is the
// content namespace; to may be empty.
func StreamHeader(ns, from, to, id string) []byte {
	b := make([]byte, 0, 256)
	b = append(b, `<?xml version='1.0'?><stream:stream xmlns='`...)
	b = append(b, ns...)
	b = append(b, `' xmlns:stream='http://etherx.jabber.org/streams'`...)
	if id != "" {
		b = appendAttr(b, "id", id)
	}
	if from != "" {
		b = appendAttr(b, "from", from)
	}
	if to != "" {
		b = appendAttr(b, "to", to)
	}
	b = append(b, ` version='1.0' xml:lang='en'>`...)
	return b
}

// StreamError returns a <stream:error/> with condition cond and optional
// text (and payload, e.g. the host of see-other-host), followed by the
// closing </stream:stream>.
func StreamError(cond, content, text string) []byte {
	b := []byte(`<stream:error><`)
	b = append(b, cond...)
	b = append(b, ` xmlns='urn:ietf:params:xml:ns:xmpp-streams'`...)
	if content != "" {
		b = append(b, '>')
		b = appendEscaped(b, content)
		b = append(b, `</`...)
		b = append(b, cond...)
		b = append(b, '>')
	} else {
		b = append(b, `/>`...)
	}
	if text != "" {
		b = append(b, `<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>`...)
		b = appendEscaped(b, text)
		b = append(b, `</text>`...)
	}
	return append(b, `</stream:error></stream:stream>`...)
}

// ErrorStanza returns a stanza error of kind name (message, presence, iq)
// with the given id, from and to, type='error', and an <error/> of errType
// (cancel, wait, modify, auth) with condition cond (RFC 6120 §8.3).
func ErrorStanza(name, id, from, to, errType, cond, text string) []byte {
	b := make([]byte, 0, 256)
	b = append(b, '<')
	b = append(b, name...)
	if from != "" {
		b = appendAttr(b, "from", from)
	}
	if to != "" {
		b = appendAttr(b, "to", to)
	}
	if id != "" {
		b = appendAttr(b, "id", id)
	}
	b = append(b, ` type='error'><error type='`...)
	b = append(b, errType...)
	b = append(b, `'><`...)
	b = append(b, cond...)
	b = append(b, ` xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>`...)
	if text != "" {
		b = append(b, `<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>`...)
		b = appendEscaped(b, text)
		b = append(b, `</text>`...)
	}
	b = append(b, `</error></`...)
	b = append(b, name...)
	return append(b, '>')
}

// StanzaError returns the error reply to el: from and to swapped.
func StanzaError(el *Element, errType, cond, text string) []byte {
	return ErrorStanza(el.Name.Local, el.Get("id"), el.Get("to"), el.Get("from"), errType, cond, text)
}

// AppendAttr appends ` name="value"` with value escaped.
func AppendAttr(b []byte, name, value string) []byte { return appendAttr(b, name, value) }

// AppendText appends s escaped as character data.
func AppendText(b []byte, s string) []byte { return appendEscaped(b, s) }

// Ack returns an XEP-0198 <a h='n'/>.
func Ack(h uint32) []byte {
	b := append([]byte(nil), `<a xmlns='urn:xmpp:sm:3' h='`...)
	b = strconv.AppendUint(b, uint64(h), 10)
	return append(b, `'/>`...)
}
