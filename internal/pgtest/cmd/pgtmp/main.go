// Command pgtmp runs a throw-away PostgreSQL 15 for `make run-postgres`: it
// initialises ./data/pg (or -dir), starts the server, prints the DSN on
// stdout and stops the server on SIGINT or SIGTERM. The data directory is
// kept unless -rm is given, so a restart finds the previous data.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"xcollect.dev/xcollect/internal/pgtest"
)

func main() {
	dir := flag.String("dir", "data/pg", "directory for the cluster, socket and log")
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0 = a free port)")
	durable := flag.Bool("durable", true, "keep fsync on (false: fast mode, data may be lost on a crash)")
	rm := flag.Bool("rm", false, "remove -dir after stopping")
	flag.Parse()
	if err := run(*dir, *port, *durable, *rm); err != nil {
		fmt.Fprintf(os.Stderr, "pgtmp: %v\n", err)
		os.Exit(1)
	}
}

func run(dir string, port int, durable, rm bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	s, err := pgtest.New(pgtest.Options{Dir: abs, Port: port, Durable: durable})
	if err != nil {
		return err
	}
	fmt.Println(s.DSN())
	fmt.Fprintf(os.Stderr, "pgtmp: postgres running in %s (log %s); export XCOLLECT_POSTGRES_DSN=%q; Ctrl-C stops it\n",
		abs, filepath.Join(abs, "postgres.log"), s.DSN())
	sig := <-sigs
	fmt.Fprintf(os.Stderr, "pgtmp: %v: stopping postgres\n", sig)
	err = s.Stop()
	if rm {
		if rerr := os.RemoveAll(abs); err == nil {
			err = rerr
		}
	}
	return err
}
