package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"text/tabwriter"

	"xcollect.dev/xcollect/internal/adminapi"
	"xcollect.dev/xcollect/internal/config"
	"xcollect.dev/xcollect/storage"
)

const sessionHelp = `xcollect session — the client sessions of a running node

  xcollect session list              full JIDs bound on the node, one a line
  xcollect session kick USER@DOMAIN/RESOURCE
                                     end that session (stream error policy-violation, no resumption)

The node is reached through its admin socket (data_dir/admin.sock, a node
on the embedded store) or else its HTTP port (listeners.http) with
http.admin_token (or XCOLLECT_ADMIN_TOKEN).`

const clusterHelp = `xcollect cluster — the cluster as a running node sees it

  xcollect cluster members           nodes, state, sessions and load score

The node is reached like 'xcollect session' does.`

// nodeClient reaches the running node of f: its admin socket, else its
// HTTP port with the admin token. These commands have no stopped-node
// form: sessions and membership exist only while nodes run.
func nodeClient(ctx context.Context, f config.File, stderr io.Writer) (*adminapi.Client, error) {
	if c, err := runningNode(ctx, f, stderr); err == nil {
		return c, nil
	}
	addr := ""
	if f.Listeners.HTTP != nil {
		addr = *f.Listeners.HTTP
	}
	if addr == "" || f.HTTP.AdminToken == "" {
		return nil, errors.New("no running node found: no admin socket in " + f.DataDir +
			", and the HTTP port needs listeners.http and http.admin_token (or XCOLLECT_ADMIN_TOKEN)")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listeners.http %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	c := adminapi.NewHTTPClient("http://"+net.JoinHostPort(host, port), f.HTTP.AdminToken)
	if _, err := c.Components(ctx); err != nil {
		return nil, fmt.Errorf("no running node answers on %s: %w", addr, err)
	}
	return c, nil
}

// connectNode parses the common flags of the command name (args after
// its subcommand), loads the configuration and reaches the running node;
// errors name the command.
func connectNode(ctx context.Context, name, help string, args []string, stderr io.Writer) (*adminapi.Client, *flag.FlagSet, error) {
	fs := newFlagSet(name, help, stderr)
	var c common
	c.register(fs)
	if err := parse(fs, args); err != nil {
		return nil, nil, err
	}
	f, err := c.load()
	if err != nil {
		return nil, nil, err
	}
	node, err := nodeClient(ctx, f, stderr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return node, fs, nil
}

func cmdSession(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, sessionHelp)
		return errUsage
	}
	if isHelp(args[0]) {
		fmt.Fprintln(stdout, sessionHelp)
		return nil
	}
	sub := args[0]
	if sub != "list" && sub != "kick" {
		fmt.Fprintf(stderr, "xcollect session: unknown subcommand %q\n\n%s\n", sub, sessionHelp)
		return errUsage
	}
	node, fs, err := connectNode(ctx, "session "+sub, sessionHelp, args[1:], stderr)
	if err != nil {
		return err
	}
	if sub == "list" {
		list, err := node.Sessions(ctx)
		if err != nil {
			return err
		}
		for _, s := range list {
			fmt.Fprintln(stdout, s)
		}
		return nil
	}
	if fs.NArg() != 1 || !strings.Contains(fs.Arg(0), "/") {
		return errors.New("session kick: give one full JID, USER@DOMAIN/RESOURCE (see 'xcollect session list')")
	}
	if err := node.Kick(ctx, fs.Arg(0)); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("session kick: no session %s on this node", fs.Arg(0))
		}
		return err
	}
	fmt.Fprintf(stdout, "kicked: %s\n", fs.Arg(0))
	return nil
}

func cmdCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, clusterHelp)
		return errUsage
	}
	if isHelp(args[0]) {
		fmt.Fprintln(stdout, clusterHelp)
		return nil
	}
	if args[0] != "members" {
		fmt.Fprintf(stderr, "xcollect cluster: unknown subcommand %q\n\n%s\n", args[0], clusterHelp)
		return errUsage
	}
	node, _, err := connectNode(ctx, "cluster members", clusterHelp, args[1:], stderr)
	if err != nil {
		return err
	}
	members, err := node.Members(ctx)
	if err != nil {
		return err
	}
	if len(members) == 0 {
		fmt.Fprintln(stdout, "single node: no cluster configured")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "NODE\tSTATE\tSESSIONS\tSCORE")
	for _, m := range members {
		state := "alive"
		if !m.Alive {
			state = "dead"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\n", m.Name, state, m.Sessions, m.Score)
	}
	return nil
}
