package storage

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"fmt"
	"hash"

	"mellium.im/sasl"
)

// DefaultIterations is the SCRAM iteration count for new passwords: 4096 is
// the minimum RFC 7677 recommends and what Prosody and ejabberd use.
const DefaultIterations = 4096

// NewCredentials derives the SCRAM-SHA-1 and SCRAM-SHA-256 salted keys of
// password with fresh random salts. iterations <= 0 means DefaultIterations.
func NewCredentials(password string, iterations int) (Credentials, error) {
	if password == "" {
		return Credentials{}, fmt.Errorf("storage: empty password")
	}
	if iterations <= 0 {
		iterations = DefaultIterations
	}
	mk := func(h func() hash.Hash) (ScramKeys, error) {
		salt := make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return ScramKeys{}, fmt.Errorf("storage: salt: %w", err)
		}
		// SCRAM's Hi() is PBKDF2 with one hash-sized block (RFC 5802);
		// the standard library's is about twice as fast as a generic HMAC
		// loop, which matters for bulk imports.
		salted, err := pbkdf2.Key(h, password, salt, iterations, h().Size())
		if err != nil {
			return ScramKeys{}, fmt.Errorf("storage: salt password: %w", err)
		}
		return ScramKeys{Salt: salt, Iterations: iterations, SaltedPassword: salted}, nil
	}
	var c Credentials
	var err error
	if c.SHA1, err = mk(sha1.New); err != nil {
		return c, err
	}
	if c.SHA256, err = mk(sha256.New); err != nil {
		return c, err
	}
	return c, nil
}

// Verify reports whether password matches c (used by SASL PLAIN). The
// comparison is constant-time.
func (c Credentials) Verify(password string) bool {
	k := c.SHA256
	if len(k.SaltedPassword) == 0 {
		return false
	}
	got := sasl.SCRAMSaltPassword(sha256.New, []byte(password), k.Salt, k.Iterations)
	return hmac.Equal(got, k.SaltedPassword)
}
