package cluster

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Handshake (both sides prove knowledge of the key and bind both names; with
// a key it runs inside TLS, see linktls.go):
//
//	dialer   -> magic, name, nonceD
//	acceptor -> magic, name, nonceA, hasKey, [HMAC(key, "acceptor"|nonceD|nonceA|nameD|nameA)]
//	dialer   -> hasKey, [HMAC(key, "dialer"|nonceA|nonceD|nameD|nameA)]
//	acceptor -> status (0 accepted, 1 refused: proof, 2 refused: not a member)
//
// Status 2 comes only after a valid proof: the acceptor tells a key holder
// that it does not count it among the members (yet); the dialer retries.

func linkMAC(key []byte, role string, n1, n2 []byte, dialer, acceptor string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range [][]byte{[]byte(role), n1, n2, []byte(dialer), {0}, []byte(acceptor)} {
		m.Write(p) //nolint:errcheck // hash.Hash never fails
	}
	return m.Sum(nil)
}

func writeHello(w io.Writer, name string, nonce []byte) error {
	b := append([]byte(linkMagic), byte(len(name)))
	b = append(b, name...)
	b = append(b, nonce...)
	_, err := w.Write(b)
	return err
}

func readHello(r io.Reader) (name string, nonce []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", nil, fmt.Errorf("read hello: %w", err)
	}
	if hdr[0] == 0x16 && hdr[1] == 0x03 { // a TLS handshake record
		return "", nil, fmt.Errorf("%w: peer opened a TLS link: it has a secret key, this node has none", ErrAuth)
	}
	if string(hdr[:4]) != linkMagic {
		return "", nil, errors.New("not an xcollect link (bad magic)")
	}
	buf := make([]byte, int(hdr[4])+nonceSize)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", nil, fmt.Errorf("read hello: %w", err)
	}
	return string(buf[:hdr[4]]), buf[hdr[4]:], nil
}

func writeProof(w io.Writer, mac []byte) error {
	b := []byte{0}
	if mac != nil {
		b[0] = 1
		b = append(b, mac...)
	}
	_, err := w.Write(b)
	return err
}

func readProof(r io.Reader) ([]byte, error) {
	var f [1]byte
	if _, err := io.ReadFull(r, f[:]); err != nil {
		return nil, fmt.Errorf("read proof: %w", err)
	}
	if f[0] == 0 {
		return nil, nil
	}
	mac := make([]byte, sha256.Size)
	if _, err := io.ReadFull(r, mac); err != nil {
		return nil, fmt.Errorf("read proof: %w", err)
	}
	return mac, nil
}

func checkProof(key, got, want []byte) error {
	switch {
	case len(key) == 0 && got == nil:
		return nil
	case len(key) == 0:
		return fmt.Errorf("%w: peer uses a secret key, this node has none", ErrAuth)
	case got == nil:
		return fmt.Errorf("%w: peer sent no proof", ErrAuth)
	case !hmac.Equal(got, want):
		return fmt.Errorf("%w: wrong secret key", ErrAuth)
	}
	return nil
}

func macOrNil(key []byte, role string, n1, n2 []byte, dialer, acceptor string) []byte {
	if len(key) == 0 {
		return nil
	}
	return linkMAC(key, role, n1, n2, dialer, acceptor)
}

// dialHandshake runs the dialer side; it returns an error unless the
// acceptor is the expected peer and accepted us.
func dialHandshake(conn net.Conn, key []byte, self, peer string) error {
	if err := conn.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return err
	}
	nd := make([]byte, nonceSize)
	rand.Read(nd) //nolint:errcheck // crypto/rand.Read never fails (Go 1.24+)
	if err := writeHello(conn, self, nd); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	name, na, err := readHello(conn)
	if err != nil {
		if len(key) == 0 && errors.Is(err, io.EOF) {
			return fmt.Errorf("%w (a node with a secret key closes plain links; is the key missing here?)", err)
		}
		return err
	}
	if name != peer {
		return fmt.Errorf("expected node %s, reached %s", peer, name)
	}
	got, err := readProof(conn)
	if err != nil {
		return err
	}
	if err := checkProof(key, got, macOrNil(key, "acceptor", nd, na, self, peer)); err != nil {
		return err
	}
	if err := writeProof(conn, macOrNil(key, "dialer", na, nd, self, peer)); err != nil {
		return fmt.Errorf("write proof: %w", err)
	}
	var st [1]byte
	if _, err := io.ReadFull(conn, st[:]); err != nil {
		return fmt.Errorf("%w: refused by %s (%v)", ErrAuth, peer, err)
	}
	switch st[0] {
	case 0:
	case statusNotMember:
		return fmt.Errorf("%w: %s does not count %s among its members (yet), or not at this address", ErrNotMember, peer, self)
	default:
		return fmt.Errorf("%w: refused by %s", ErrAuth, peer)
	}
	return conn.SetDeadline(time.Time{})
}

// Handshake status bytes.
const (
	statusAccepted  = 0
	statusRefused   = 1
	statusNotMember = 2
)

// acceptHandshake runs the acceptor side and returns the dialer's name.
// admit, called once the dialer proved the key, refuses a dialer that is
// not a current member (nil admits everyone: handshake tests).
func acceptHandshake(conn net.Conn, key []byte, self string, admit func(peer string) error) (string, error) {
	if err := conn.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return "", err
	}
	peer, nd, err := readHello(conn)
	if err != nil {
		return "", err
	}
	if peer == "" || peer == self {
		return "", fmt.Errorf("bad peer name %q", peer)
	}
	na := make([]byte, nonceSize)
	rand.Read(na) //nolint:errcheck // crypto/rand.Read never fails (Go 1.24+)
	var b bytes.Buffer
	if err := writeHello(&b, self, na); err != nil {
		return peer, err
	}
	if err := writeProof(&b, macOrNil(key, "acceptor", nd, na, peer, self)); err != nil {
		return peer, err
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		return peer, fmt.Errorf("write hello: %w", err)
	}
	got, err := readProof(conn)
	if err != nil {
		return peer, err
	}
	if err := checkProof(key, got, macOrNil(key, "dialer", na, nd, peer, self)); err != nil {
		_, werr := conn.Write([]byte{statusRefused})
		return peer, errors.Join(err, werr)
	}
	if admit != nil {
		if err := admit(peer); err != nil {
			_, werr := conn.Write([]byte{statusNotMember})
			return peer, errors.Join(err, werr)
		}
	}
	if _, err := conn.Write([]byte{statusAccepted}); err != nil {
		return peer, fmt.Errorf("write status: %w", err)
	}
	return peer, conn.SetDeadline(time.Time{})
}
