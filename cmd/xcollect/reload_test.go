package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/certs"
	"xcollect.dev/xcollect/internal/testutil"
)

// writeCert writes a new self-signed certificate for host to cert and key.
func writeCert(t *testing.T, host, cert, key string) []byte {
	t.Helper()
	c, certPEM, keyPEM, err := certs.SelfSigned([]string{host})
	if err != nil {
		t.Fatal(err)
	}
	// Replace atomically, as an operator's tooling (certbot) does.
	for path, data := range map[string][]byte{cert: certPEM, key: keyPEM} {
		if err := os.WriteFile(path+".new", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	return c.Certificate[0]
}

// peerCert completes a direct-TLS handshake with addr and returns the
// connection and the server's certificate.
func peerCert(t *testing.T, addr string) (*tls.Conn, []byte) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) // the test checks the certificate itself
	if err != nil {
		t.Fatalf("tls dial %s: %v", addr, err)
	}
	return conn, conn.ConnectionState().PeerCertificates[0].Raw
}

// TestSIGHUPReloadsCertificate: after the certificate files change and
// the node gets SIGHUP, new connections see the new certificate, a
// connection made before stays open and answers, and a changed
// components list is reported as needing a restart.
func TestSIGHUPReloadsCertificate(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := writeCert(t, "first.localhost", certPath, keyPath)
	tlsAddr := testutil.FreeAddr(t)
	cfg := filepath.Join(dir, "x.yaml")
	base := fmt.Sprintf("node: {name: hup}\ndomains: [localhost]\ndata_dir: %q\nlog: {level: info, format: json}\n"+
		"listeners: {c2s: \"\", c2s_tls: %q, component: %q, http: \"\"}\ntls: {cert: %q, key: %q}\n"+
		"components:\n  - jid: collector.localhost\n    secret: sec\n", dir, tlsAddr, testutil.FreeAddr(t), certPath, keyPath)
	if err := os.WriteFile(cfg, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testutil.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- cmdServe(ctx, []string{"--config", cfg}, logs, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	testutil.WaitFor(t, 30*time.Second, "node start", func() bool { return strings.Contains(logs.String(), "xcollect node started") })

	old, got := peerCert(t, tlsAddr)
	defer old.Close()
	if !bytes.Equal(got, first) {
		t.Fatal("the node does not serve the configured certificate")
	}
	// The old connection opens its stream: the node answers.
	if _, err := old.Write([]byte("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	_ = old.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := old.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "stream") {
		t.Fatalf("stream header before the reload: %q %v", buf[:n], err)
	}

	second := writeCert(t, "second.localhost", certPath, keyPath)
	if err := os.WriteFile(cfg, []byte(base+"  - jid: other.localhost\n    secret: sec2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the reload in the log", func() bool { return strings.Contains(logs.String(), "TLS certificate reloaded") })
	if !strings.Contains(logs.String(), "restart the node to apply them") {
		t.Fatalf("the changed components are not reported:\n%s", logs.String())
	}
	fresh, got := peerCert(t, tlsAddr)
	fresh.Close()
	if !bytes.Equal(got, second) {
		t.Fatal("a new connection after SIGHUP still gets the old certificate")
	}
	// The connection made before the reload is still open: reading finds
	// nothing to read (a timeout), not the end of the stream.
	_ = old.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	for {
		n, err := old.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			break
		}
		if err != nil {
			t.Fatalf("the connection made before SIGHUP was dropped: %v", err)
		}
		if strings.Contains(string(buf[:n]), "</stream:stream>") {
			t.Fatalf("the node closed the old stream: %q", buf[:n])
		}
	}
	// A broken certificate file: the node keeps the current one.
	if err := os.WriteFile(certPath, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the failed reload in the log", func() bool { return strings.Contains(logs.String(), "certificate not reloaded") })
	again, got := peerCert(t, tlsAddr)
	again.Close()
	if !bytes.Equal(got, second) {
		t.Fatal("a failed reload changed the certificate")
	}
}
