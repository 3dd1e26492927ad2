package cluster

import (
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Link encryption. With a secret key, every node link is TLS 1.3. All
// nodes derive the same Ed25519 key pair from the key (HKDF-SHA256 with a
// fixed label) and the same self-signed certificate for it; both sides
// present it and accept only a peer whose certificate carries that public
// key. TLS 1.3 makes each side prove it holds the private key
// (CertificateVerify), so a peer without the cluster key cannot complete the
// handshake, and nothing on the wire (stanzas, session directory) is in the
// clear. There are no certificates to manage: rotating the secret key
// rotates the certificate. The HMAC challenge (link.go) still runs inside
// TLS: it names the peer node and binds both names.

const (
	// linkTLSLabel is the HKDF info that separates the link key from the
	// other uses of the secret key (memberlist's AES key, the HMAC key).
	linkTLSLabel = "xcollect cluster link v1"
	// linkCertName is the certificate's subject common name.
	linkCertName = "xcollect-cluster"
)

// linkTLS holds the TLS configurations of the node links; it is built once
// in New and nil when the cluster has no secret key.
type linkTLS struct {
	pub    ed25519.PublicKey // the derived key every peer must present
	der    []byte            // the derived certificate
	server *tls.Config
	client *tls.Config
}

// newLinkTLS derives the link key pair and certificate from secret.
func newLinkTLS(secret []byte) (*linkTLS, error) {
	seed, err := hkdf.Key(sha256.New, secret, nil, linkTLSLabel, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("cluster: derive link key: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	// Fixed fields and a deterministic signature (Ed25519): every node
	// derives byte-for-byte the same certificate. Validity is not checked
	// (the peer's key is pinned), the dates only have to be well-formed.
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: linkCertName},
		NotBefore:    time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return nil, fmt.Errorf("cluster: link certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("cluster: link certificate: %w", err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}
	lt := &linkTLS{pub: pub, der: der}
	lt.server = &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cert},
		ClientAuth:             tls.RequireAnyClientCert, // the dialer must present the cluster certificate too
		VerifyPeerCertificate:  lt.verifyPeer,
		SessionTicketsDisabled: true, // links are long-lived; no resumption
	}
	lt.client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// InsecureSkipVerify turns off only the CA chain and host name
		// checks, which cannot apply to a self-signed certificate that all
		// nodes share. The peer is verified by VerifyPeerCertificate
		// instead: its key must be the one derived from the cluster key
		// (pinning), and TLS 1.3 still checks that the peer signed the
		// handshake with that key.
		InsecureSkipVerify:    true, //nolint:gosec // verified by verifyPeer (pinned key), see above
		VerifyPeerCertificate: lt.verifyPeer,
	}
	return lt, nil
}

// verifyPeer accepts only the certificate of the derived key. It runs on
// both sides of the handshake.
func (lt *linkTLS) verifyPeer(raw [][]byte, _ [][]*x509.Certificate) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: peer sent no link certificate", ErrAuth)
	}
	cert, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return fmt.Errorf("%w: peer link certificate: %w", ErrAuth, err)
	}
	// Compare the key, not the DER: another Go version may encode the same
	// certificate differently.
	if pub, ok := cert.PublicKey.(ed25519.PublicKey); !ok || !pub.Equal(lt.pub) {
		return fmt.Errorf("%w: peer's link certificate is not derived from this node's secret key (different secret key)", ErrAuth)
	}
	return nil
}

// tlsConn is a link's TLS connection. Its Close closes the TCP connection
// at once, without tls.Conn's close_notify alert, which can wait up to 5 s
// for a peer that stopped reading (link.close runs under link.mu). Frames
// are length-prefixed, so the peer detects a truncated stream anyway.
type tlsConn struct{ *tls.Conn }

func (c tlsConn) Close() error { return c.NetConn().Close() }

// tlsHandshakeError explains a failed TLS handshake.
func tlsHandshakeError(err error) error {
	if errors.Is(err, ErrAuth) {
		return err // our verifyPeer refused the peer's certificate
	}
	if rh, ok := errors.AsType[tls.RecordHeaderError](err); ok && string(rh.RecordHeader[:len(linkMagic)]) == linkMagic {
		return fmt.Errorf("%w: peer sent a plain-text link hello: it has no secret key, this node has one", ErrAuth)
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "remote error" {
		return fmt.Errorf("%w: peer refused the TLS handshake (different secret key?): %w", ErrAuth, err)
	}
	return fmt.Errorf("TLS handshake: %w", err)
}

// dialLink runs the dialer side of a link on a fresh connection: TLS when
// lt is set (bounded by handshakeTimeout and ctx), then the HMAC challenge.
// It returns the connection to use; on error the caller closes conn.
func dialLink(ctx context.Context, conn net.Conn, lt *linkTLS, key []byte, self, peer string) (net.Conn, error) {
	if lt != nil {
		tc := tls.Client(conn, lt.client)
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return nil, tlsHandshakeError(err)
		}
		conn = tlsConn{tc}
	}
	if err := dialHandshake(conn, key, self, peer); err != nil {
		return nil, err
	}
	return conn, nil
}

// acceptLink is dialLink's acceptor side; it also returns the dialer's name
// (empty if the handshake failed before it was known). admit refuses a
// dialer that proved the key but is not a current member.
func acceptLink(ctx context.Context, conn net.Conn, lt *linkTLS, key []byte, self string, admit func(peer string) error) (net.Conn, string, error) {
	if lt != nil {
		tc := tls.Server(conn, lt.server)
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return nil, "", tlsHandshakeError(err)
		}
		conn = tlsConn{tc}
	}
	peer, err := acceptHandshake(conn, key, self, admit)
	if err != nil {
		return nil, peer, err
	}
	return conn, peer, nil
}
