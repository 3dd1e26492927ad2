// Package certs generates and loads the node's TLS certificates: a
// self-signed ECDSA certificate for development (xcollect serve without a
// configured certificate) and PEM files from the configuration.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// SelfSigned returns a new self-signed certificate for hosts, valid for a
// year, with its PEM encodings.
func SelfSigned(hosts []string) (cert tls.Certificate, certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return cert, nil, nil, fmt.Errorf("certs: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return cert, nil, nil, fmt.Errorf("certs: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"xcollect self-signed"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h, "*."+h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return cert, nil, nil, fmt.Errorf("certs: create certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return cert, nil, nil, fmt.Errorf("certs: marshal key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	return cert, certPEM, keyPEM, err
}

// LoadOrCreate loads dir/cert.pem and dir/key.pem, creating a self-signed
// pair for hosts when they do not exist. created reports a new pair.
func LoadOrCreate(dir string, hosts []string) (cert tls.Certificate, created bool, err error) {
	cp, kp := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if cert, err = tls.LoadX509KeyPair(cp, kp); err == nil {
		return cert, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return cert, false, fmt.Errorf("certs: load %s: %w", cp, err)
	}
	cert, certPEM, keyPEM, err := SelfSigned(hosts)
	if err != nil {
		return cert, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return cert, false, fmt.Errorf("certs: %w", err)
	}
	if err := os.WriteFile(kp, keyPEM, 0o600); err != nil {
		return cert, false, fmt.Errorf("certs: write key: %w", err)
	}
	if err := os.WriteFile(cp, certPEM, 0o644); err != nil {
		return cert, false, fmt.Errorf("certs: write certificate: %w", err)
	}
	return cert, true, nil
}

// ServerConfig returns a TLS configuration serving cert (TLS 1.2+).
func ServerConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// Reloadable is a server certificate that can be replaced while
// listeners use it (SIGHUP): handshakes after Reload get the new one,
// established connections keep theirs. Safe for concurrent use.
type Reloadable struct {
	load func() (tls.Certificate, error)
	cur  atomic.Pointer[tls.Certificate]
}

// NewReloadable loads the first certificate with load, which Reload calls
// again.
func NewReloadable(load func() (tls.Certificate, error)) (*Reloadable, error) {
	r := &Reloadable{load: load}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload loads the certificate again; on an error the current one stays.
func (r *Reloadable) Reload() error {
	cert, err := r.load()
	if err != nil {
		return err
	}
	r.cur.Store(&cert)
	return nil
}

// Current returns the certificate new handshakes get.
func (r *Reloadable) Current() *tls.Certificate { return r.cur.Load() }

// Config returns a server TLS configuration (as ServerConfig) that takes
// the current certificate at each handshake.
func (r *Reloadable) Config() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.cur.Load(), nil }}
}
