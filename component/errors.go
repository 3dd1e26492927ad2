package component

import "errors"

// Sentinel errors of the component package. Match them with errors.Is.
var (
	// ErrBacklogFull is passed to a Submit callback when more than
	// Config.Backlog items already wait in memory for a commit (the store is
	// failing or too slow). The server answers the sender with
	// resource-constraint.
	ErrBacklogFull = errors.New("component: commit backlog full")
	// ErrShutdown is passed to a Submit callback after Shutdown began, or
	// for items that could not be committed before Shutdown's context ended.
	ErrShutdown = errors.New("component: manager shut down")
	// ErrUnknownComponent is passed to a Submit callback for an item whose
	// Component is not configured.
	ErrUnknownComponent = errors.New("component: unknown component")
)

// errShortResult: a store returned fewer results than items (a store bug);
// treated like a failed commit.
var errShortResult = errors.New("component: enqueue returned a short result")
