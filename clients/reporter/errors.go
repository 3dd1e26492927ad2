package reporter

import (
	"errors"

	"xcollect.dev/xcollect/internal/xmppc"
)

// Sentinel errors of the reporter package. Match them with errors.Is.
var (
	// ErrOutboxFull is returned (wrapped with the context's error) by Report
	// and SetPresence when the outbox stayed full until their context ended.
	ErrOutboxFull = errors.New("reporter: outbox full")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("reporter: closed")
	// ErrAlreadyConnected is returned by a second Connect.
	ErrAlreadyConnected = errors.New("reporter: already connected")
	// ErrNoStreamManagement is returned by Connect when the server does not
	// offer XEP-0198: without it no report can be acknowledged.
	ErrNoStreamManagement = errors.New("reporter: the server does not support XEP-0198 stream management")
)

// StreamError is a stream error from the server (RFC 6120 §4.9), e.g.
// see-other-host, conflict, policy-violation.
type StreamError = xmppc.StreamError

// AuthError is a SASL failure: the credentials were refused
// (Condition not-authorized).
type AuthError = xmppc.AuthError

// StanzaError is an error reply (RFC 6120 §8.3). Report returns one when
// the server answered the report with an error, e.g. resource-constraint
// when the component's queue is full: the report was not stored.
type StanzaError = xmppc.StanzaError
