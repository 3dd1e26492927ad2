// Package interop holds the interoperability tests: an in-process node
// (internal/testnode StartInProcess) driven by third-party XMPP clients and
// component libraries that users actually run — slixmpp and aioxmpp
// (scripts in testdata/), @xmpp/client and @xmpp/component (node/, installed
// by scripts/test-deps.sh), go-sendxmpp and mellium.im/xmpp — plus the
// RFC 6120/6121 conformance, spoofing, security and component-crash checks
// that must hold whatever client is on the other side.
//
// The package has no code of its own: everything is in its _test.go files.
package interop
