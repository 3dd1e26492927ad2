package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/adminapi"
	"xcollect.dev/xcollect/internal/adminsock"
	"xcollect.dev/xcollect/internal/config"
	"xcollect.dev/xcollect/storage"
	"xcollect.dev/xcollect/storage/postgres"
)

const userHelp = `xcollect user — manage accounts in the configured store

  xcollect user add USER@DOMAIN [--password P]    (or the password on stdin)
  xcollect user passwd USER@DOMAIN [--password P]
  xcollect user delete USER@DOMAIN
  xcollect user list [DOMAIN]
  xcollect user import FILE [--csv]               JSON lines {"jid":…,"password":…}, or CSV jid,password
                                                   ("-" reads stdin); existing accounts stay as they are

Passwords are stored only as SCRAM-SHA-1 and SCRAM-SHA-256 salted keys.
While a node runs on the embedded store (one process's file), these
commands reach it through its admin socket (data_dir/admin.sock, mode
0600, the admin API of /v1/admin/); otherwise they use the store directly.
The output is the same either way.`

func cmdUser(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, userHelp)
		return errUsage
	}
	if isHelp(args[0]) {
		fmt.Fprintln(stdout, userHelp)
		return nil
	}
	sub := args[0]
	switch sub {
	case "add", "passwd", "delete", "list", "import":
	default:
		fmt.Fprintf(stderr, "xcollect user: unknown subcommand %q\n\n%s\n", sub, userHelp)
		return errUsage
	}
	fs := newFlagSet("user "+sub, userHelp, stderr)
	var c common
	c.register(fs)
	password := fs.String("password", "", "the password (default: read one line from stdin)")
	csvInput := fs.Bool("csv", false, "import: the file is CSV (jid,password) instead of JSON lines")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	f, err := c.load()
	if err != nil {
		return err
	}
	var users storage.UserStore
	var remote *adminapi.Client
	if remote, err = runningNode(ctx, f, stderr); err == nil {
		users = remote
	} else {
		store, _, err := openStore(ctx, f, zerolog.Nop())
		if err != nil {
			return err
		}
		defer store.Close()
		users = store.Users()
	}
	bareArg := func() (string, error) {
		if fs.NArg() != 1 {
			return "", fmt.Errorf("user %s: give exactly one USER@DOMAIN", sub)
		}
		j, err := jid.Parse(fs.Arg(0))
		if err != nil || j.Localpart() == "" || j.Resourcepart() != "" {
			return "", fmt.Errorf("user %s: %q is not a bare JID like alice@%s", sub, fs.Arg(0), f.Domains[0])
		}
		served := false
		for _, d := range f.Domains {
			served = served || d == j.Domainpart()
		}
		if !served {
			return "", fmt.Errorf("user %s: domain %s is not served (domains: %s); add it to domains or use --domains", sub, j.Domainpart(), strings.Join(f.Domains, ","))
		}
		return j.String(), nil
	}
	switch sub {
	case "add", "passwd":
		bare, err := bareArg()
		if err != nil {
			return err
		}
		pw := *password
		if pw == "" {
			if pw, err = readPassword(os.Stdin, stderr); err != nil {
				return err
			}
		}
		cred, err := storage.NewCredentials(pw, 0)
		if err != nil {
			return err
		}
		if sub == "add" {
			err = users.CreateUser(ctx, bare, cred)
			if errors.Is(err, storage.ErrExists) {
				return fmt.Errorf("user add: %s already exists; use 'xcollect user passwd %s' to change the password", bare, bare)
			}
		} else {
			err = users.SetCredentials(ctx, bare, cred)
			if errors.Is(err, storage.ErrNotFound) {
				return fmt.Errorf("user passwd: %s does not exist; create it with 'xcollect user add %s'", bare, bare)
			}
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s\n", map[string]string{"add": "added", "passwd": "password changed"}[sub], bare)
	case "delete":
		bare, err := bareArg()
		if err != nil {
			return err
		}
		if err := users.DeleteUser(ctx, bare); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return fmt.Errorf("user delete: %s does not exist", bare)
			}
			return err
		}
		fmt.Fprintf(stdout, "deleted: %s\n", bare)
	case "import":
		if fs.NArg() != 1 {
			return fmt.Errorf("user import: give one FILE (or - for stdin)")
		}
		in := io.Reader(os.Stdin)
		if fs.Arg(0) != "-" {
			file, err := os.Open(fs.Arg(0))
			if err != nil {
				return fmt.Errorf("user import: %w", err)
			}
			defer file.Close()
			in = file
		}
		var res adminapi.ImportResult
		if remote != nil {
			res, err = remote.ImportUsers(ctx, in, *csvInput)
		} else {
			res, err = adminapi.ImportUsers(ctx, users, f.Domains, in, *csvInput)
		}
		if err != nil {
			return fmt.Errorf("user import: %w", err)
		}
		for _, e := range res.Failed {
			fmt.Fprintf(stderr, "line %d: %s\n", e.Line, e.Error)
		}
		fmt.Fprintf(stdout, "imported: %d added, %d existed, %d failed\n", res.Added, res.Existed, len(res.Failed))
		if len(res.Failed) > 0 {
			return fmt.Errorf("user import: %d lines refused", len(res.Failed))
		}
	case "list":
		domains := f.Domains
		if fs.NArg() == 1 {
			domains = []string{fs.Arg(0)}
		}
		for _, d := range domains {
			list, err := users.ListUsers(ctx, d)
			if err != nil {
				return err
			}
			for _, u := range list {
				fmt.Fprintln(stdout, u)
			}
		}
	default:
		fmt.Fprintln(stderr, userHelp)
		return errUsage
	}
	return nil
}

// runningNode returns a client of the node running on f's data directory
// (its admin socket), or an error when none answers there: then the
// command opens the store itself. Trying the socket first spares the
// wait for the embedded store's file lock.
func runningNode(ctx context.Context, f config.File, stderr io.Writer) (*adminapi.Client, error) {
	path := filepath.Join(f.DataDir, adminsock.FileName)
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	c, err := adminapi.DialSocket(ctx, path)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(stderr, "xcollect: using the node running on", f.DataDir, "(its admin socket)")
	return c, nil
}

func readPassword(r io.Reader, stderr io.Writer) (string, error) {
	fmt.Fprint(stderr, "password: ")
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("no password: pass --password or one line on stdin")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

const queueHelp = `xcollect queue — see and manage component queues

  xcollect queue stats [COMPONENT]
  xcollect queue list COMPONENT [--dead] [--limit N]
  xcollect queue replay COMPONENT [ID...]    dead letters back to the queue (all without IDs)
  xcollect queue drop COMPONENT [ID...]      delete dead letters (all without IDs)`

func cmdQueue(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, queueHelp)
		return errUsage
	}
	if isHelp(args[0]) {
		fmt.Fprintln(stdout, queueHelp)
		return nil
	}
	sub := args[0]
	switch sub {
	case "stats", "list", "replay", "drop":
	default:
		fmt.Fprintf(stderr, "xcollect queue: unknown subcommand %q\n\n%s\n", sub, queueHelp)
		return errUsage
	}
	fs := newFlagSet("queue "+sub, queueHelp, stderr)
	var c common
	c.register(fs)
	dead := fs.Bool("dead", false, "list dead letters instead of queued rows")
	limit := fs.Int("limit", 50, "rows to list")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	f, err := c.load()
	if err != nil {
		return err
	}
	var q adminapi.Queues
	if remote, err := runningNode(ctx, f, stderr); err == nil {
		q = remote
	} else {
		store, _, err := openStore(ctx, f, zerolog.Nop())
		if err != nil {
			return err
		}
		defer store.Close()
		q = adminapi.StoreQueues{Q: store.Queue()}
	}
	comp := fs.Arg(0)
	needComp := func() error {
		if comp == "" {
			return fmt.Errorf("queue %s: give the COMPONENT JID", sub)
		}
		return nil
	}
	ids := func() ([]int64, error) {
		var out []int64
		for _, a := range fs.Args()[1:] {
			id, err := strconv.ParseInt(a, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("queue %s: %q is not a row id", sub, a)
			}
			out = append(out, id)
		}
		return out, nil
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	defer tw.Flush()
	switch sub {
	case "stats":
		st, err := q.QueueStats(ctx, comp)
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, "COMPONENT\tROWS\tBYTES\tSENDERS\tLEASED\tOLDEST\tDEAD")
		for _, s := range st {
			oldest := "-"
			if !s.Oldest.IsZero() {
				oldest = time.Since(s.Oldest).Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%d\n", s.Component, s.Rows, s.Bytes, s.Senders, s.Leased, oldest, s.DeadLetters)
		}
	case "list":
		if err := needComp(); err != nil {
			return err
		}
		rows, err := q.QueueList(ctx, comp, *dead, *limit)
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, "ID\tENQUEUED\tFROM\tSTANZA-ID\tBYTES\tATTEMPTS\tREASON")
		for _, r := range rows {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%s\n", r.ID, r.Enqueued.Format(time.RFC3339), r.From, r.StanzaID, r.Bytes, r.Attempts, r.Reason)
		}
	case "replay", "drop":
		if err := needComp(); err != nil {
			return err
		}
		list, err := ids()
		if err != nil {
			return err
		}
		var n int
		if sub == "replay" {
			n, err = q.QueueReplay(ctx, comp, list)
		} else {
			n, err = q.QueueDrop(ctx, comp, list)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s: %d dead letters of %s\n", map[string]string{"replay": "replayed", "drop": "dropped"}[sub], n, comp)
	default:
		fmt.Fprintln(stderr, queueHelp)
		return errUsage
	}
	return nil
}

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", "xcollect migrate — apply the embedded Postgres schema migrations (nodes also do it at start)", stderr)
	var c common
	c.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	f, err := c.load()
	if err != nil {
		return err
	}
	if f.Storage.Postgres.DSN == "" {
		return fmt.Errorf("migrate: no Postgres configured: set storage.postgres.dsn, XCOLLECT_POSTGRES_DSN or --postgres-dsn (the embedded store needs no migration)")
	}
	if err := postgres.Migrate(ctx, f.Storage.Postgres.DSN); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "schema up to date")
	return nil
}
