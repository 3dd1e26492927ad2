package xmppc

import (
	"encoding/xml"
	"errors"
	"strings"

	"xcollect.dev/xcollect/internal/wire"
)

// ErrTLSRequired is returned when the server does not offer STARTTLS and
// the caller did not allow plaintext.
var ErrTLSRequired = errors.New("the server does not offer STARTTLS and plaintext is not allowed")

// StreamError is a <stream:error/> the peer ended the stream with (RFC 6120
// §4.9). Content is the condition element's text: the host:port of a
// see-other-host error.
type StreamError struct {
	Condition string
	Content   string
	Text      string
	// Raw is the whole <stream:error/> element as the server sent it.
	Raw string
}

func (e *StreamError) Error() string {
	s := "stream error: " + e.Condition
	if e.Content != "" {
		s += " " + e.Content
	}
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// AuthError is a SASL <failure/> (RFC 6120 §6.5): the credentials were
// refused. Condition is e.g. not-authorized.
type AuthError struct {
	Condition string
	Text      string
}

func (e *AuthError) Error() string {
	s := "sasl: " + e.Condition
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// StanzaError is an error stanza (RFC 6120 §8.3): Type is cancel, wait,
// modify, auth or continue; Condition e.g. resource-constraint.
type StanzaError struct {
	Type      string
	Condition string
	Text      string
}

func (e *StanzaError) Error() string {
	s := "stanza error: " + e.Condition + " (" + e.Type + ")"
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

type condChild struct {
	XMLName xml.Name
	Text    string `xml:",chardata"`
}

// ParseStreamError returns the stream error in el (a <stream:error/>).
func ParseStreamError(el *wire.Element) *StreamError {
	var se struct {
		Inner []condChild `xml:",any"`
	}
	_ = xml.Unmarshal(el.Raw, &se) // best effort: an odd body leaves the condition empty
	e := &StreamError{Condition: wire.UndefinedCondition, Raw: string(el.Raw)}
	for _, in := range se.Inner {
		if in.XMLName.Space != wire.NSStreams {
			continue
		}
		if in.XMLName.Local == "text" {
			e.Text = strings.TrimSpace(in.Text)
		} else {
			e.Condition, e.Content = in.XMLName.Local, strings.TrimSpace(in.Text)
		}
	}
	return e
}

// ParseStanzaError returns the <error/> of an error stanza, or a StanzaError
// with condition undefined-condition when it has none.
func ParseStanzaError(raw []byte) *StanzaError {
	var st struct {
		Error struct {
			Type  string      `xml:"type,attr"`
			Inner []condChild `xml:",any"`
		} `xml:"error"`
	}
	_ = xml.Unmarshal(raw, &st) // best effort, as above
	e := &StanzaError{Type: st.Error.Type, Condition: wire.UndefinedCondition}
	for _, in := range st.Error.Inner {
		if in.XMLName.Space != wire.NSStanzas {
			continue
		}
		if in.XMLName.Local == "text" {
			e.Text = strings.TrimSpace(in.Text)
		} else {
			e.Condition = in.XMLName.Local
		}
	}
	return e
}

func parseAuthFailure(el *wire.Element) *AuthError {
	var f struct {
		Inner []condChild `xml:",any"`
	}
	_ = xml.Unmarshal(el.Raw, &f) // best effort, as above
	e := &AuthError{Condition: "not-authorized"}
	for _, in := range f.Inner {
		if in.XMLName.Local == "text" {
			e.Text = strings.TrimSpace(in.Text)
		} else {
			e.Condition = in.XMLName.Local
		}
	}
	return e
}
