package storage

import "errors"

// Sentinel errors of every Store implementation. Match them with errors.Is.
var (
	ErrNotFound = errors.New("storage: not found")
	ErrExists   = errors.New("storage: already exists")
	ErrLimit    = errors.New("storage: limit reached")
	ErrClosed   = errors.New("storage: closed")
)
