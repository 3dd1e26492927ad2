package processor_test

import (
	"testing"

	"xcollect.dev/xcollect/internal/testnode"
)

// bin is the xcollect binary built by TestMain.
var bin string

func TestMain(m *testing.M) { testnode.Main(m, &bin) }
