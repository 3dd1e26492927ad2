package embedded

import "sync"

// notifier fans commit signals out to subscribers. It starts no goroutine:
// notify does a non-blocking send on each subscriber's one-slot channel, so
// signals coalesce and a slow subscriber never blocks a commit.
type notifier struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{} // component → channels
}

func (n *notifier) init() { n.subs = map[string]map[chan struct{}]struct{}{} }

func (n *notifier) subscribe(component string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	set := n.subs[component]
	if set == nil {
		set = map[chan struct{}]struct{}{}
		n.subs[component] = set
	}
	set[ch] = struct{}{}
	n.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			delete(n.subs[component], ch)
			if len(n.subs[component]) == 0 {
				delete(n.subs, component)
			}
		})
	}
}

// notify wakes every subscriber of components. It must not block.
func (n *notifier) notify(components ...string) {
	if len(components) == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range components {
		for ch := range n.subs[c] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}
