package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

const healthHelp = `xcollect healthcheck — ask the node on this host whether it is healthy

  xcollect healthcheck [--config FILE] [--timeout 3s]

GETs /healthz on the HTTP listener of the configuration (listeners.http;
an empty or wildcard host means 127.0.0.1) and exits 0 when the node
answers 200, 1 otherwise. For container health checks in images without
a shell or curl.`

func cmdHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("healthcheck", healthHelp, stderr)
	var c common
	c.register(fs)
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := parse(fs, args); err != nil {
		return err
	}
	f, err := c.load()
	if err != nil {
		return err
	}
	addr := *f.Listeners.HTTP
	if addr == "" {
		return fmt.Errorf("healthcheck: listeners.http is disabled (\"\") in the configuration: nothing to ask")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("healthcheck: listeners.http %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/healthz"
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096)) // the status decides; the body only explains
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "%s: %s", url, body)
	return nil
}
