package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"xcollect.dev/xcollect/internal/config"
)

// errUsage means the flag package already printed the problem (exit 2).
var errUsage = errors.New("usage")

// errHelp means help was asked for and printed (exit 0).
var errHelp = errors.New("help")

// isHelp reports whether a command's first argument asks for its help.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// common holds the flags every command shares.
type common struct {
	configPath string
	domains    string
	dataDir    string
	dsn        string
	logLevel   string
	nodeName   string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.configPath, "config", os.Getenv("XCOLLECT_CONFIG"), "configuration file (YAML); env XCOLLECT_CONFIG")
	fs.StringVar(&c.domains, "domains", "", "comma-separated served domains (overrides domains); env XCOLLECT_DOMAINS")
	fs.StringVar(&c.dataDir, "data-dir", "", "directory of the embedded store and generated certificate; env XCOLLECT_DATA_DIR")
	fs.StringVar(&c.dsn, "postgres-dsn", "", "use Postgres at this DSN instead of the embedded store; env XCOLLECT_POSTGRES_DSN")
	fs.StringVar(&c.logLevel, "log-level", "", "debug, info, warn or error; env XCOLLECT_LOG_LEVEL")
	fs.StringVar(&c.nodeName, "node-name", "", "node name, unique in a cluster; env XCOLLECT_NODE_NAME")
}

// load reads the configuration: file, then environment, then flags.
func (c *common) load() (config.File, error) {
	f, err := config.Load(c.configPath)
	if err != nil {
		return f, err
	}
	pick := func(flagVal, env string) string {
		if flagVal != "" {
			return flagVal
		}
		return os.Getenv(env)
	}
	if v := pick(c.domains, "XCOLLECT_DOMAINS"); v != "" {
		f.Domains = strings.Split(v, ",")
		for i := range f.Domains {
			f.Domains[i] = strings.TrimSpace(f.Domains[i])
		}
	}
	if v := pick(c.dataDir, "XCOLLECT_DATA_DIR"); v != "" {
		if f.Storage.Embedded.Path == f.DataDir+"/xcollect.db" {
			f.Storage.Embedded.Path = v + "/xcollect.db"
		}
		f.DataDir = v
	}
	if v := pick(c.dsn, "XCOLLECT_POSTGRES_DSN"); v != "" {
		f.Storage.Postgres.DSN = v
	}
	if v := pick(c.logLevel, "XCOLLECT_LOG_LEVEL"); v != "" {
		f.Log.Level = v
	}
	if v := pick(c.nodeName, "XCOLLECT_NODE_NAME"); v != "" {
		f.Node.Name = v
	}
	return f, f.Validate()
}

func newFlagSet(name, help string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nFlags:\n", help)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags that may stand before, between or after positional
// arguments (xcollect user add alice@example.com --password x).
func parse(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return errHelp
			}
			return errUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	// Re-parse only the positional arguments so fs.Args returns them.
	return fs.Parse(append([]string{"--"}, positional...))
}
