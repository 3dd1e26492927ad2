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

	"gopkg.in/yaml.v3"
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/config"
)

const componentHelp = `xcollect component — processors (XEP-0114 components) in the configuration file

  xcollect component add JID --config FILE [--secret S] [--multi] [--receive-presence]
  xcollect component list --config FILE

add writes the component into FILE (a secret is generated when none is
given and printed once); restart the node(s) to accept it.`

func cmdComponent(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, componentHelp)
		return errUsage
	}
	sub := args[0]
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
	switch sub {
	case "list":
		f, err := c.load()
		if err != nil {
			return err
		}
		for _, comp := range f.Components {
			fmt.Fprintf(stdout, "%s\tmulti=%v\treceive_presence=%v\n", comp.JID, comp.Multi, comp.ReceivePresence)
		}
		return nil
	case "add":
		if fs.NArg() != 1 {
			return errors.New("component add: give exactly one component JID, e.g. collector.example.com")
		}
		j, err := jid.Parse(fs.Arg(0))
		if err != nil || j.Localpart() != "" || j.Resourcepart() != "" {
			return fmt.Errorf("component add: %q is not a domain JID like collector.example.com", fs.Arg(0))
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
	fmt.Fprintln(stderr, componentHelp)
	return errUsage
}

// addComponent appends comp to the components list of the YAML file at
// path, keeping the rest of the file (comments included), and checks the
// result loads and validates before replacing the file.
func addComponent(path string, comp config.Component) error {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("component add: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("component add: %s: %w", path, err)
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("component add: %s: the top level is not a mapping", path)
	}
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "components" {
			list = root.Content[i+1]
		}
	}
	if list == nil || list.Kind != yaml.SequenceNode {
		if list != nil && !(list.Kind == yaml.ScalarNode && list.Tag == "!!null") {
			return fmt.Errorf("component add: %s: components is not a list", path)
		}
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		if list != nil {
			*list = *seq
		} else {
			root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "components"}, seq)
			list = seq
		}
	}
	for _, item := range list.Content {
		for i := 0; i+1 < len(item.Content); i += 2 {
			if item.Content[i].Value == "jid" && item.Content[i+1].Value == comp.JID {
				return fmt.Errorf("component add: %s is already configured in %s", comp.JID, path)
			}
		}
	}
	var item yaml.Node
	if err := item.Encode(struct {
		JID             string `yaml:"jid"`
		Secret          string `yaml:"secret"`
		Multi           bool   `yaml:"multiple_connections"`
		ReceivePresence bool   `yaml:"receive_presence"`
	}{comp.JID, comp.Secret, comp.Multi, comp.ReceivePresence}); err != nil {
		return err
	}
	item.Style = 0
	list.Content = append(list.Content, &item)
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".xcollect-*.yaml")
	if err != nil {
		return fmt.Errorf("component add: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(out); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	f, err := config.Load(tmp.Name())
	if err == nil {
		err = f.Validate()
	}
	if err != nil {
		return fmt.Errorf("component add: the result does not validate, %s unchanged: %w", path, err)
	}
	mode := os.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
