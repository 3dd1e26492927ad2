package storage

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"testing"

	"mellium.im/sasl"
)

// TestNewCredentialsMatchSCRAM: the salted passwords are SCRAM's Hi() as
// the SASL library computes it during a login, for both hashes.
func TestNewCredentialsMatchSCRAM(t *testing.T) {
	c, err := NewCredentials("pässword", 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.SHA1.Iterations != DefaultIterations || len(c.SHA1.Salt) != 16 || len(c.SHA256.Salt) != 16 {
		t.Fatalf("credentials %+v", c)
	}
	if want := sasl.SCRAMSaltPassword(sha1.New, []byte("pässword"), c.SHA1.Salt, c.SHA1.Iterations); !bytes.Equal(c.SHA1.SaltedPassword, want) {
		t.Fatal("SCRAM-SHA-1 salted password differs from the SASL library's")
	}
	if want := sasl.SCRAMSaltPassword(sha256.New, []byte("pässword"), c.SHA256.Salt, c.SHA256.Iterations); !bytes.Equal(c.SHA256.SaltedPassword, want) {
		t.Fatal("SCRAM-SHA-256 salted password differs from the SASL library's")
	}
	if !c.Verify("pässword") || c.Verify("password") {
		t.Fatal("Verify")
	}
}
