package e2e

import (
	"testing"

	"xcollect.dev/xcollect/internal/testnode"
)

// binPath is the xcollect binary built by TestMain.
var binPath string

func TestMain(m *testing.M) { testnode.Main(m, &binPath) }
