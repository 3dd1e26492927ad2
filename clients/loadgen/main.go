// Command loadgen measures an XMPP server (xcollect, Prosody, ejabberd, any
// server with SCRAM-SHA-1 and XEP-0114) from the outside. It negotiates
// streams with the module's one client stack (internal/xmppc), then speaks
// raw XMPP (internal/wire for reading), and prints one JSON line of
// results per run.
//
// Scenarios:
//
//	reports  N clients each keep W reports in flight (or send at -rate
//	         reports/s in total) to a component that loadgen also runs;
//	         delivered reports/s, p50/p99 send→component latency, lost.
//	login    N workers log in and out in a loop for -d; logins/s, p50/p99
//	         (-starttls for STARTTLS+SCRAM).
//	idle     N authenticated idle sessions; server RSS delta per session
//	         from /proc/PID/status of -server-pid.
//	offline  reports to the component while it is absent: what the
//	         clients get back, then what the component receives once it
//	         connects.
//
// Users user0…user{N-1} (-user pattern) must exist beforehand. -c2s takes
// a comma-separated list to spread the clients over several nodes of a
// cluster: client (or login worker) i connects to address i mod k.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

type options struct {
	scenario   string
	label      string
	c2sAddr    string   // -c2s as given
	c2sAddrs   []string // -c2s split on commas: client i uses c2sAddrs[i % len]
	compAddr   string
	domain     string
	userPat    string
	passPat    string
	users      int
	idleWarmup int
	compJID    string
	secret     string
	compSM     string
	clientSM   string
	n          int
	window     int
	duration   time.Duration
	warmup     time.Duration
	rate       float64
	size       int
	startTLS   bool
	mech       string
	serverPIDs string
	settle     time.Duration
	perClient  int
	drain      time.Duration
	dialConc   int
	rEvery     int
	burst      bool
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.scenario, "scenario", "reports", "reports, login, idle or offline")
	fs.StringVar(&o.label, "label", "", "server label copied into the output")
	fs.StringVar(&o.c2sAddr, "c2s", "127.0.0.1:5222", "c2s address (STARTTLS-capable, plaintext allowed for reports); a comma-separated list spreads the clients: client i uses address i mod k (cluster nodes)")
	fs.StringVar(&o.compAddr, "component-addr", "127.0.0.1:5347", "XEP-0114 listener address")
	fs.StringVar(&o.domain, "domain", "localhost", "XMPP domain of the users")
	fs.StringVar(&o.userPat, "user", "user%d", "user name pattern; %d is the client index")
	fs.StringVar(&o.passPat, "password", "pass", "password (pattern; %d is the client index)")
	fs.IntVar(&o.users, "users", 0, "number of existing users (0: -n); clients use user[i % users]")
	fs.IntVar(&o.idleWarmup, "idle-warmup", 300, "idle: sessions opened and closed before the baseline is read")
	fs.StringVar(&o.compJID, "component", "collector.localhost", "component JID")
	fs.StringVar(&o.secret, "secret", "secret", "component secret")
	fs.StringVar(&o.compSM, "component-sm", "auto", "XEP-0198 on the component stream: auto, on, off")
	fs.StringVar(&o.clientSM, "client-sm", "auto", "XEP-0198 on client streams: auto (when offered), resume (auto, asking for resumption as the reporter SDK does), off")
	fs.IntVar(&o.n, "n", 50, "clients (reports, idle, offline) or login workers")
	fs.IntVar(&o.window, "w", 10, "reports in flight per client (sent, not yet at the component)")
	fs.DurationVar(&o.duration, "d", 5*time.Second, "measurement duration (reports, login)")
	fs.DurationVar(&o.warmup, "warmup", 0, "reports: leave latencies of the first part of -d out")
	fs.Float64Var(&o.rate, "rate", 0, "reports: steady total rate in reports/s (0: as fast as the window allows)")
	fs.IntVar(&o.size, "size", 200, "approximate report stanza size in bytes")
	fs.BoolVar(&o.startTLS, "starttls", false, "negotiate STARTTLS before SASL")
	fs.StringVar(&o.mech, "mech", "SCRAM-SHA-1", "SASL mechanism")
	fs.StringVar(&o.serverPIDs, "server-pid", "", "comma-separated server process ids: idle sums their VmRSS, reports their CPU time (/proc/PID/stat) per report")
	fs.DurationVar(&o.settle, "settle", 2*time.Second, "idle: wait before reading RSS; offline: wait for bounces before the component connects")
	fs.IntVar(&o.perClient, "count", 10, "offline: reports per client")
	fs.DurationVar(&o.drain, "drain", 10*time.Second, "longest wait for reports still in flight at the end")
	fs.IntVar(&o.dialConc, "dial-concurrency", 16, "parallel logins while setting up sessions")
	fs.IntVar(&o.rEvery, "r-every", 1, "clients with XEP-0198 send <r/> after every k-th report")
	fs.BoolVar(&o.burst, "write-burst", true, "reports without -rate: a client writes all the reports its free window slots allow in one write (a buffered client); false: one write per report")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.users <= 0 {
		o.users = o.n
	}
	for _, a := range strings.Split(o.c2sAddr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			o.c2sAddrs = append(o.c2sAddrs, a)
		}
	}
	if len(o.c2sAddrs) == 0 {
		return errors.New("-c2s: no address")
	}
	switch o.clientSM {
	case "auto", "resume", "off":
	default:
		return fmt.Errorf("-client-sm %q: use auto, resume or off", o.clientSM)
	}
	if o.n < 1 || o.window < 1 || o.rEvery < 1 {
		return errors.New("-n, -w and -r-every must be at least 1")
	}
	var res map[string]any
	var err error
	switch o.scenario {
	case "reports":
		res, err = runReports(o)
	case "login":
		res, err = runLogin(o)
	case "idle":
		res, err = runIdle(o)
	case "offline":
		res, err = runOffline(o)
	default:
		return fmt.Errorf("unknown scenario %q", o.scenario)
	}
	if err != nil {
		return err
	}
	res["scenario"] = o.scenario
	if o.label != "" {
		res["server"] = o.label
	}
	if len(o.c2sAddrs) > 1 {
		res["c2s_addrs"] = o.c2sAddrs
	}
	res["time"] = time.Now().UTC().Format(time.RFC3339)
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}
