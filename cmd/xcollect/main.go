// Command xcollect is the xcollect node: an XMPP server for data
// collection. It only wires the packages together: flags → config → parts
// → start → wait for a signal → shut down.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `xcollect — an XMPP server cluster for data collection

Usage:
  xcollect serve   [--config FILE] [flags]   run a node (xcollect serve --help)
  xcollect user    add|passwd|delete|list|import  manage accounts
  xcollect queue   stats|list|replay|drop     see and manage component queues
  xcollect component add|remove|list          processors in the configuration file
  xcollect session list|kick                  client sessions of the running node
  xcollect cluster members                    the cluster as the running node sees it
  xcollect migrate [--config FILE]            apply the Postgres schema
  xcollect report  --to JID --payload XML     send a report, wait for its durable ack
  xcollect process --jid JID [--exec CMD]     run a processor: reports as JSON lines
  xcollect healthcheck [--config FILE]        exit 0 when the node on this host is healthy
  xcollect version                            print the version

Every command reads the same configuration: --config FILE (or
XCOLLECT_CONFIG), then environment variables, then flags. With no
configuration at all a node serves "localhost" on the embedded store in
./data.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], stdout, stderr)
	case "user":
		err = cmdUser(ctx, args[1:], stdout, stderr)
	case "queue":
		err = cmdQueue(ctx, args[1:], stdout, stderr)
	case "migrate":
		err = cmdMigrate(ctx, args[1:], stdout, stderr)
	case "session":
		err = cmdSession(ctx, args[1:], stdout, stderr)
	case "cluster":
		err = cmdCluster(ctx, args[1:], stdout, stderr)
	case "component":
		err = cmdComponent(ctx, args[1:], stdout, stderr)
	case "report":
		err = cmdReport(ctx, args[1:], stdout, stderr)
	case "process":
		err = cmdProcess(ctx, args[1:], stdout, stderr)
	case "healthcheck":
		err = cmdHealthcheck(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "xcollect", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "xcollect: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		switch err {
		case errHelp:
			return 0
		case errUsage:
			return 2
		}
		fmt.Fprintln(stderr, "xcollect:", err)
		return 1
	}
	return 0
}
