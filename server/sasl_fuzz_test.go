package server_test

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/server"
)

// FuzzSCRAM runs arbitrary SCRAM client-first and client-final messages
// against a node, one connection per input. "{nonce}" in final is replaced
// by the nonce of the server's challenge, so the fuzzer reaches the
// client-final parser and the proof check. Properties: every answer is a
// challenge, <failure/> or stream error, within a deadline, and nothing
// authenticates without the password.
func FuzzSCRAM(f *testing.F) {
	n := startNode(f, func(c *server.Config) {
		c.RequireTLS = false
		c.Auth.FreeFailures = 1 << 30    // the fuzzer fails every time:
		c.Auth.AccountFailures = 1 << 30 // no penalty, no lockout
		c.Logger = zerolog.Nop()
	})
	n.addUser(f, "alice@example.com", "secret")
	const final = "c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	f.Add(false, []byte("n,,n=alice,r=rOprNGfwEbeRWgbNEkqO"), []byte(final))
	f.Add(true, []byte("n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL"), []byte("c=biws,r={nonce},p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="))
	f.Add(false, []byte("n,a=alice@example.com,n=alice,r=x"), []byte(final))
	f.Add(false, []byte("n,a=bob@example.com,n=alice,r=x"), []byte(final))
	f.Add(false, []byte("y,,n=nobody,r=abc"), []byte("c=eSws,r={nonce},p=AAAA"))
	f.Add(false, []byte("p=tls-unique,,n=alice,r=abc"), []byte("c=cD10bHMtdW5pcXVlLCw=,r={nonce},p=AAAA"))
	f.Add(false, []byte("n,,n=al=2Cice=3D,r=abc"), []byte("c=biws,r={nonce}x,p=AAAA"))
	f.Add(false, []byte("n,,m=ext,n=alice,r=abc"), []byte("c=biws,r={nonce},e=x,p="))
	f.Add(false, []byte(""), []byte(""))
	f.Add(true, []byte("n,,n=alice,r="), []byte("r={nonce}"))
	f.Fuzz(func(t *testing.T, sha1 bool, first, final []byte) {
		mech := "SCRAM-SHA-256"
		if sha1 {
			mech = "SCRAM-SHA-1"
		}
		nc, err := net.DialTimeout("tcp", n.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		send := func(s string) {
			if _, err := io.WriteString(nc, s); err != nil {
				t.Fatalf("write: %v", err)
			}
		}
		d := wire.NewDecoder(nc, 1<<16)
		send(header("example.com"))
		if _, err := d.Header(); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Next(); err != nil { // features
			t.Fatal(err)
		}
		send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + mech + "'>" + base64.StdEncoding.EncodeToString(first) + "</auth>")
		el := nextSASL(t, d)
		if el.Name.Local != "challenge" {
			return
		}
		var ch struct {
			Text string `xml:",chardata"`
		}
		if err := xml.Unmarshal(el.Raw, &ch); err != nil {
			t.Fatal(err)
		}
		sf, _ := base64.StdEncoding.DecodeString(ch.Text)
		nonce := attrOf(sf, 'r')
		send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString(bytes.ReplaceAll(final, []byte("{nonce}"), nonce)) + "</response>")
		nextSASL(t, d)
	})
}

// nextSASL reads the server's answer to a SASL step and fails on success
// or anything unexpected.
func nextSASL(t *testing.T, d *wire.Decoder) *wire.Element {
	t.Helper()
	el, err := d.Next()
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, wire.ErrStreamEnd) {
			return &wire.Element{}
		}
		t.Fatalf("read: %v", err)
	}
	switch {
	case el.Name.Local == "success":
		t.Fatalf("authenticated without the password: %s", el.Raw)
	case el.Name.Space == wire.NSSASL && (el.Name.Local == "challenge" || el.Name.Local == "failure"):
	case el.Name.Space == wire.NSStream && el.Name.Local == "error":
	default:
		t.Fatalf("unexpected answer %s", el.Raw)
	}
	return el
}

// attrOf returns the value of the SCRAM attribute name in msg.
func attrOf(msg []byte, name byte) []byte {
	for _, p := range bytes.Split(msg, []byte(",")) {
		if len(p) > 1 && p[0] == name && p[1] == '=' {
			return p[2:]
		}
	}
	return nil
}
