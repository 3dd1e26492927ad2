package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/config"
)

const componentHelp = `xcollect component — processors (XEP-0114 components) in the configuration file

  xcollect component add JID --config FILE [--secret S] [--multi] [--receive-presence]
  xcollect component remove JID --config FILE
  xcollect component list --config FILE

JID is a subdomain of a served domain, e.g. collector.example.com. add
writes the component into FILE (a secret is generated when none is given
and printed once), remove takes it out; both change only that entry's
lines and keep the rest of the file, comments included. Restart the
node(s) to apply the change.`

func cmdComponent(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, componentHelp)
		return errUsage
	}
	if isHelp(args[0]) {
		fmt.Fprintln(stdout, componentHelp)
		return nil
	}
	sub := args[0]
	switch sub {
	case "add", "remove", "list":
	default:
		fmt.Fprintf(stderr, "xcollect component: unknown subcommand %q\n\n%s\n", sub, componentHelp)
		return errUsage
	}
	fs := newFlagSet("component "+sub, componentHelp, stderr)
	var c common
	c.register(fs)
	secret := fs.String("secret", "", "shared secret (default: a new random one)")
	multi := fs.Bool("multi", false, "allow several connections (scale-out processors)")
	presence := fs.Bool("receive-presence", false, "forward every user presence change to it")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if c.configPath == "" {
		return errors.New("component: this command edits the configuration file: pass --config FILE (or set XCOLLECT_CONFIG)")
	}
	f, err := c.load()
	if err != nil {
		return err
	}
	if sub == "list" {
		for _, comp := range f.Components {
			fmt.Fprintf(stdout, "%s\tmulti=%v\treceive_presence=%v\n", comp.JID, comp.Multi, comp.ReceivePresence)
		}
		return nil
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("component %s: give exactly one component JID, e.g. collector.%s", sub, f.Domains[0])
	}
	j, err := jid.Parse(fs.Arg(0))
	if err != nil || j.Localpart() != "" || j.Resourcepart() != "" {
		return fmt.Errorf("component %s: %q is not a domain JID like collector.%s", sub, fs.Arg(0), f.Domains[0])
	}
	if sub == "remove" {
		if err := removeComponent(c.configPath, j.String()); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed component %s from %s\n  restart the node(s) to apply it\n", j, c.configPath)
		return nil
	}
	if slices.Contains(f.Domains, j.Domainpart()) {
		return fmt.Errorf("component add: %s is also a served domain: use a subdomain such as collector.%s", j, j)
	}
	if !servedSubdomain(j.Domainpart(), f.Domains) {
		return fmt.Errorf("component add: %s is not a subdomain of a served domain (domains: %s): use e.g. collector.%s", j, strings.Join(f.Domains, ", "), f.Domains[0])
	}
	s := *secret
	if s == "" {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		s = base64.RawURLEncoding.EncodeToString(b)
	}
	if err := addComponent(c.configPath, config.Component{JID: j.String(), Secret: s, Multi: *multi, ReceivePresence: *presence}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "added component %s to %s\n  secret: %s\n  restart the node(s) to accept it\n", j, c.configPath, s)
	return nil
}

// servedSubdomain reports whether domain lies below one of the served
// domains (collector.example.com below example.com).
func servedSubdomain(domain string, served []string) bool {
	for _, d := range served {
		if strings.HasSuffix(domain, "."+d) {
			return true
		}
	}
	return false
}

// componentsText is a configuration file as lines, with where its
// components list is. Edits change whole lines only, so everything else
// stays byte for byte.
type componentsText struct {
	path  string
	lines []string // each with its "\n" (the last one may lack it)
	key   *yaml.Node
	list  *yaml.Node // nil when the file has no components key
	end   int        // index of the first line after the list
}

func readComponents(path string) (*componentsText, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	t := &componentsText{path: path}
	if len(data) > 0 {
		t.lines = strings.SplitAfter(string(data), "\n")
		if t.lines[len(t.lines)-1] == "" {
			t.lines = t.lines[:len(t.lines)-1]
		}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if doc.Kind == 0 {
		return t, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: the top level is not a mapping", path)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "components" {
			continue
		}
		t.key, t.list = root.Content[i], root.Content[i+1]
		t.end = len(t.lines)
		if i+2 < len(root.Content) {
			t.end = root.Content[i+2].Line - 1
		}
		// Blank lines and comments of the outer level before the next key
		// belong to it, not to the list.
		for t.end > t.key.Line && outerLine(t.lines[t.end-1], t.itemPrefixLen()) {
			t.end--
		}
	}
	if t.list != nil && !(t.list.Kind == yaml.SequenceNode && t.list.Style&yaml.FlowStyle == 0) &&
		!(t.list.Kind == yaml.ScalarNode && t.list.Tag == "!!null") &&
		!(t.list.Kind == yaml.SequenceNode && len(t.list.Content) == 0) {
		return nil, fmt.Errorf("%s line %d: components is not a block list (- jid: …): write it as one to use this command", path, t.key.Line)
	}
	return t, nil
}

// outerLine reports whether line is blank or a comment indented less than
// the list's items.
func outerLine(line string, indent int) bool {
	trimmed := strings.TrimLeft(line, " ")
	return strings.TrimSpace(trimmed) == "" || (strings.HasPrefix(trimmed, "#") && len(line)-len(trimmed) < indent)
}

// itemPrefix returns what stands before the first item's content ("  - "),
// or the default for an empty list.
func (t *componentsText) itemPrefix() string {
	if t.list == nil || len(t.list.Content) == 0 {
		return "  - "
	}
	it := t.list.Content[0]
	line := t.lines[it.Line-1]
	pre := line[:it.Column-1]
	if strings.TrimSpace(pre) != "-" {
		return "  - "
	}
	return pre
}

func (t *componentsText) itemPrefixLen() int {
	return len(t.itemPrefix()) - len(strings.TrimLeft(t.itemPrefix(), " "))
}

// itemStart returns the index of the first line of item k, comment lines
// directly above it at the dash's indentation included.
func (t *componentsText) itemStart(k int) int {
	start := t.list.Content[k].Line - 1
	dash := t.itemPrefixLen()
	for start > t.key.Line {
		line := t.lines[start-1]
		trimmed := strings.TrimLeft(line, " ")
		if !strings.HasPrefix(trimmed, "#") || len(line)-len(trimmed) != dash {
			break
		}
		start--
	}
	return start
}

func jidOf(item *yaml.Node) string {
	for i := 0; i+1 < len(item.Content); i += 2 {
		if item.Content[i].Value == "jid" {
			return item.Content[i+1].Value
		}
	}
	return ""
}

// addComponent appends comp to the components list of the YAML file at
// path, changing no other line, and replaces the file only when the result
// loads, validates and lists comp.
func addComponent(path string, comp config.Component) error {
	t, err := readComponents(path)
	if err != nil {
		return fmt.Errorf("component add: %w", err)
	}
	if t.list != nil {
		for _, item := range t.list.Content {
			if jidOf(item) == comp.JID {
				return fmt.Errorf("component add: %s is already configured in %s", comp.JID, path)
			}
		}
	}
	pre := t.itemPrefix()
	indent := strings.Repeat(" ", len(pre))
	entry := pre + "jid: " + yamlScalar(comp.JID) + indent + "secret: " + yamlScalar(comp.Secret)
	if comp.Multi {
		entry += indent + "multiple_connections: true\n"
	}
	if comp.ReceivePresence {
		entry += indent + "receive_presence: true\n"
	}
	lines := slices.Clone(t.lines)
	if n := len(lines); n > 0 && !strings.HasSuffix(lines[n-1], "\n") {
		lines[n-1] += "\n"
	}
	switch {
	case t.list == nil:
		lines = append(lines, "components:\n", entry)
	case len(t.list.Content) == 0: // "components:" or "components: []"
		keyLine := "components:"
		if c := t.key.LineComment + t.list.LineComment; c != "" {
			keyLine += " " + c
		}
		lines = slices.Insert(lines, t.key.Line-1, keyLine+"\n", entry)
		lines = slices.Delete(lines, t.key.Line+1, t.key.Line+2)
	default:
		lines = slices.Insert(lines, t.end, entry)
	}
	return replaceConfig(path, lines, "component add", func(f config.File) bool {
		return slices.ContainsFunc(f.Components, func(c config.Component) bool { return c == withComponentDefaults(comp) })
	})
}

// removeComponent deletes the entry of jid (and the comment lines right
// above it) from the components list of the YAML file at path.
func removeComponent(path, jid string) error {
	t, err := readComponents(path)
	if err != nil {
		return fmt.Errorf("component remove: %w", err)
	}
	k := -1
	if t.list != nil {
		k = slices.IndexFunc(t.list.Content, func(item *yaml.Node) bool { return jidOf(item) == jid })
	}
	if k < 0 {
		return fmt.Errorf("component remove: %s is not configured in %s", jid, path)
	}
	end := t.end
	if k+1 < len(t.list.Content) {
		end = t.itemStart(k + 1)
	}
	lines := slices.Delete(slices.Clone(t.lines), t.itemStart(k), end)
	return replaceConfig(path, lines, "component remove", func(f config.File) bool {
		return len(f.Components) == len(t.list.Content)-1 &&
			!slices.ContainsFunc(f.Components, func(c config.Component) bool { return c.JID == jid })
	})
}

// yamlScalar renders s as a YAML scalar line (quoted when it must be).
func yamlScalar(s string) string {
	b, err := yaml.Marshal(s)
	if err != nil { // a string always marshals
		panic(err)
	}
	return string(b)
}

// withComponentDefaults returns c as config.Load returns it.
func withComponentDefaults(c config.Component) config.Component {
	return config.File{Components: []config.Component{c}}.WithDefaults().Components[0]
}

// replaceConfig writes lines to path (same mode) when the result loads,
// validates and passes ok; otherwise path stays unchanged.
func replaceConfig(path string, lines []string, what string, ok func(config.File) bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".xcollect-*.yaml")
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(strings.Join(lines, "")); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: write %s: %w", what, tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: write %s: %w", what, tmp.Name(), err)
	}
	f, err := config.Load(tmp.Name())
	if err == nil {
		err = f.Validate()
	}
	if err != nil {
		return fmt.Errorf("%s: the result does not validate, %s unchanged: %w", what, path, err)
	}
	if !ok(f) {
		return fmt.Errorf("%s: could not edit %s safely (unusual layout), it is unchanged: edit it by hand", what, path)
	}
	mode := os.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("%s: replace %s: %w", what, path, err)
	}
	return nil
}
