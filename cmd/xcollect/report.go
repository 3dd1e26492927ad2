package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/clients/reporter"
)

const reportHelp = `xcollect report — send one report and wait until the node stored it durably

  xcollect report --addr 127.0.0.1:5222 --jid dev1@example.com --password P \
                  --to collector.example.com --payload '<temp xmlns="urn:example">21.5</temp>'

--payload takes one XML element, @FILE to read it from a file, or @- for
stdin. The password may also come from XCOLLECT_PASSWORD. The report's id
is printed once the node acknowledged it (XEP-0198 <a/>, sent after the
report was committed to the component's queue). Use --insecure for a node
with its generated self-signed certificate.`

func cmdReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("report", reportHelp, stderr)
	addr := fs.String("addr", "127.0.0.1:5222", "c2s address (host:port) of a node")
	jidF := fs.String("jid", "", "account, a bare JID like dev1@example.com (required)")
	password := fs.String("password", "", "account password (default: env XCOLLECT_PASSWORD)")
	resource := fs.String("resource", "", "resource to bind (default: chosen by the node)")
	to := fs.String("to", "", "component JID the report goes to, e.g. collector.example.com (required)")
	payload := fs.String("payload", "", "one XML element, @FILE, or @- for stdin (required)")
	insecure := fs.Bool("insecure", false, "accept any TLS certificate (a node's self-signed one)")
	plaintext := fs.Bool("plaintext", false, "allow a node that does not offer STARTTLS")
	timeout := fs.Duration("timeout", 30*time.Second, "give up when the report is not acknowledged within this time")
	verbose := fs.Bool("v", false, "log the connection's progress to stderr")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *password == "" {
		*password = os.Getenv("XCOLLECT_PASSWORD")
	}
	if err := required(fs, stderr, map[string]string{"jid": *jidF, "to": *to, "payload": *payload, "password": *password}); err != nil {
		return err
	}
	if err := checkTo(*to, *jidF); err != nil {
		fmt.Fprintf(stderr, "xcollect report: %v\n", err)
		return errUsage
	}
	body, err := readPayload(*payload)
	if err != nil {
		return err
	}
	log := zerolog.Nop()
	if *verbose {
		log = withTime(zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05.000", NoColor: !isTerminal(stderr)}))
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	r, err := reporter.New(reporter.Config{Addr: *addr, JID: *jidF, Password: *password, Resource: *resource,
		InsecureSkipVerify: *insecure, AllowPlaintext: *plaintext, Logger: log})
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.Connect(ctx); err != nil {
		return explainClientErr(err, *addr, "--jid and --password")
	}
	id, err := r.Report(ctx, *to, body)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("report %s: no acknowledgement within --timeout %v: it is not known to be stored; send it again (the node drops a repeat of the same id, a new run uses a new id)", id, *timeout)
		}
		return explainClientErr(err, *addr, "--jid and --password")
	}
	fmt.Fprintln(stdout, id)
	return nil
}

// required reports the first missing flag with the usage.
func required(fs *flag.FlagSet, stderr io.Writer, vals map[string]string) error {
	var missing []string
	for name, v := range vals {
		if v == "" {
			missing = append(missing, "--"+name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	fs.Usage()
	fmt.Fprintf(stderr, "\nmissing: %s\n", strings.Join(missing, ", "))
	return errUsage
}

// checkTo refuses a --to that names the account's own server: a report
// goes to a component (a subdomain such as collector.example.com), and the
// server would take a message to itself without passing it anywhere.
func checkTo(to, account string) error {
	t, err := jid.Parse(to)
	if err != nil {
		return fmt.Errorf("--to %q is not a JID: give the component's JID, e.g. collector.example.com", to)
	}
	a, err := jid.Parse(account)
	if err != nil {
		return fmt.Errorf("--jid %q is not a JID like dev1@example.com", account)
	}
	if t.Localpart() == "" && strings.EqualFold(t.Domainpart(), a.Domainpart()) {
		return fmt.Errorf("--to %s is the server itself, not a component: send the report to a component's JID, e.g. collector.%s", to, a.Domainpart())
	}
	return nil
}

// readPayload returns the payload argument, a file's content (@FILE) or
// stdin (@-).
func readPayload(arg string) ([]byte, error) {
	switch {
	case arg == "@-":
		b, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("--payload @-: read stdin: %w", err)
		}
		return b, nil
	case strings.HasPrefix(arg, "@"):
		b, err := os.ReadFile(arg[1:])
		if err != nil {
			return nil, fmt.Errorf("--payload: %w", err)
		}
		return b, nil
	}
	return []byte(arg), nil
}

// explainClientErr turns an SDK error into a message that says what to fix.
// creds names the flags that hold the credentials.
func explainClientErr(err error, addr, creds string) error {
	var (
		ae  *reporter.AuthError
		se  *reporter.StreamError
		st  *reporter.StanzaError
		ua  x509.UnknownAuthorityError
		hne x509.HostnameError
	)
	switch {
	case errors.As(err, &ae) && ae.Condition == "not-authorized":
		return fmt.Errorf("not-authorized: check %s", creds)
	case errors.As(err, &ae):
		return fmt.Errorf("authentication failed (%s): check %s", ae.Condition, creds)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("connection refused: is xcollect running on %s? (start it with xcollect serve, or pass --addr)", addr)
	case errors.As(err, &se) && se.Condition == "not-authorized":
		return fmt.Errorf("not-authorized: check %s", creds)
	case errors.As(err, &se) && se.Condition == "host-unknown":
		return fmt.Errorf("host-unknown: the node does not serve this domain or component (%s): check --jid, or the node's domains/components configuration", se.Text)
	case errors.As(err, &se) && se.Condition == "conflict":
		return fmt.Errorf("conflict: %s is already connected elsewhere and the node allows one connection (another xcollect process running?)", strings.TrimSuffix(strings.TrimPrefix(se.Text, "component "), " is already connected and does not allow several connections"))
	case errors.As(err, &ua), errors.As(err, &hne):
		return fmt.Errorf("TLS: the node's certificate is not trusted (%v): use --insecure for a node with a self-signed certificate", err)
	case errors.Is(err, reporter.ErrNoStreamManagement):
		return fmt.Errorf("%w: xcollect report needs a server with XEP-0198 acks", err)
	case errors.As(err, &st) && st.Condition == "resource-constraint":
		return fmt.Errorf("the node refused the report: resource-constraint (%s): the component's queue is full or the store failed; retry later", st.Text)
	case errors.As(err, &st):
		return fmt.Errorf("the node refused the report: %w", err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer from %s within --timeout: %w", addr, err)
	}
	return err
}
