package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/testutil"
)

// TestLogLinesNameTheNodeOnce: the cluster logs through the logger it is
// given, which names the node; it adds no second "node" key (JSON readers
// keep one of the two, or choke).
func TestLogLinesNameTheNodeOnce(t *testing.T) {
	var logs testutil.SyncBuffer
	a := startNode(t, "node-a", func(c *Config) {
		c.Logger = zerolog.New(&logs).With().Str("node", "node-a").Logger()
	})
	startNode(t, "node-b", nil, a.gossipAddr())
	testutil.WaitFor(t, 10*time.Second, "a link up in node-a's log", func() bool { return strings.Contains(logs.String(), "link up") })
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if n := strings.Count(line, `"node":`); n != 1 {
			t.Fatalf("%d node keys in %s", n, line)
		}
	}
}
