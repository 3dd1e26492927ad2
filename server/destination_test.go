package server

import (
	"testing"

	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/storage"
)

// oneComponent is a Queuer that knows one component and queues nothing.
type oneComponent string

func (c oneComponent) IsComponent(domain string) bool                             { return domain == string(c) }
func (oneComponent) Submit(storage.QueueItem, func(storage.EnqueueResult, error)) {}
func (oneComponent) PresenceComponents(string) []string                           { return nil }
func (c oneComponent) Components() []string                                       { return []string{string(c)} }

func TestDestinationOf(t *testing.T) {
	s := &Server{domains: map[string]bool{"example.com": true}}
	cases := map[string]destination{
		"example.com":                   toServer,
		"example.com/resource":          toServer,
		"alice@example.com":             toUser,
		"alice@example.com/phone":       toUser,
		"collector.example.com":         toRemote, // no component manager yet
		"bob@elsewhere.org":             toRemote,
		"elsewhere.org":                 toRemote,
		"someone@collector.example.com": toRemote,
	}
	check := func() {
		t.Helper()
		for to, want := range cases {
			if got := s.destinationOf(jid.MustParse(to)); got != want {
				t.Errorf("destinationOf(%s) = %d, want %d", to, got, want)
			}
		}
	}
	check()
	s.queue = oneComponent("collector.example.com")
	cases["collector.example.com"] = toComponent
	cases["someone@collector.example.com"] = toComponent // a JID at the component is the component's
	check()
}
