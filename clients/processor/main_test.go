package processor_test

import (
	"fmt"
	"os"
	"testing"

	"xcollect.dev/xcollect/clients/internal/testnode"
)

// bin is the xcollect binary built by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "xcollect-processor-test.")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin, err = testnode.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir) //nolint:errcheck // best effort before exit
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir) //nolint:errcheck // best effort: a leftover temp dir is harmless
	os.Exit(code)
}
