package xmppc

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"xcollect.dev/xcollect/internal/wire"
)

// scriptedServer is the server end of a net.Pipe driven by a test script:
// the dumbest server that still speaks the protocol, so the client's
// choices (mechanism, TLS, signature check) show in what it sends.
type scriptedServer struct {
	t   *testing.T
	nc  net.Conn
	br  *bufio.Reader
	dec *wire.Decoder
}

// openStream reads the client's stream header and answers with ours and
// the features feats.
func (s *scriptedServer) openStream(feats string) error {
	s.dec = wire.NewDecoder(s.br, 0)
	if _, err := s.dec.Header(); err != nil {
		return err
	}
	_, err := s.nc.Write([]byte("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='example.com' version='1.0'><stream:features>" + feats + "</stream:features>"))
	return err
}

func (s *scriptedServer) next() (*wire.Element, error) { return s.dec.Next() }

func (s *scriptedServer) send(x string) error {
	_, err := s.nc.Write([]byte(x))
	return err
}

// startScripted runs script as the server of a pipe and returns the client
// end. The script's goroutine is owned by the test: Cleanup closes the pipe
// and waits for it, and reports the script's error.
func startScripted(t *testing.T, script func(*scriptedServer) error) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan error, 1)
	go func() {
		s := &scriptedServer{t: t, nc: server, br: bufio.NewReader(server)}
		done <- script(s)
	}()
	t.Cleanup(func() {
		client.Close()
		server.Close()
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, wire.ErrStreamEnd) && !strings.Contains(err.Error(), "closed pipe") {
			t.Errorf("scripted server: %v", err)
		}
	})
	return client
}

const mechanismsPlainAndScram = "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms>"

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A named PLAIN mechanism is used (with SkipTLS the offered STARTTLS is
// not negotiated) and its success, which carries no server signature, is
// accepted.
func TestOpenC2SPlainSkipTLS(t *testing.T) {
	got := make(chan string, 2)
	nc := startScripted(t, func(s *scriptedServer) error {
		if err := s.openStream("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" + mechanismsPlainAndScram); err != nil {
			return err
		}
		el, err := s.next()
		if err != nil {
			return err
		}
		got <- string(el.Raw)
		if err := s.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"); err != nil {
			return err
		}
		return s.openStream("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>")
	})
	c, feats, err := OpenC2S(testContext(t), nc, C2SConfig{Domain: "example.com", Username: "alice", Password: "pw", SkipTLS: true, Mechanism: "PLAIN", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("OpenC2S: %v", err)
	}
	defer c.Close()
	if c.Secure {
		t.Fatal("SkipTLS negotiated TLS")
	}
	if !strings.Contains(string(feats.Raw), "xmpp-bind") {
		t.Fatalf("features after auth: %s", feats.Raw)
	}
	auth := <-got
	want := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00pw"))
	if !strings.Contains(auth, "mechanism='PLAIN'") || !strings.Contains(auth, want) {
		t.Fatalf("auth sent: %s", auth)
	}
}

// A SCRAM <success/> without the server's signature is refused: the client
// would otherwise talk to a server that never proved it knows the password.
func TestOpenC2SScramWithoutSignatureRefused(t *testing.T) {
	nc := startScripted(t, func(s *scriptedServer) error {
		if err := s.openStream(mechanismsPlainAndScram); err != nil {
			return err
		}
		if _, err := s.next(); err != nil { // <auth/>
			return err
		}
		return s.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
	})
	_, _, err := OpenC2S(testContext(t), nc, C2SConfig{Domain: "example.com", Username: "alice", Password: "pw", AllowPlaintext: true, Timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "server signature") {
		t.Fatalf("OpenC2S = %v, want the missing signature refused", err)
	}
}

// A mechanism the caller names but the server does not offer fails before
// anything is sent; an unknown name fails too.
func TestOpenC2SNamedMechanismNotOffered(t *testing.T) {
	for _, mech := range []string{"SCRAM-SHA-256", "DIGEST-MD5"} {
		t.Run(mech, func(t *testing.T) {
			sent := make(chan bool, 1)
			nc := startScripted(t, func(s *scriptedServer) error {
				if err := s.openStream(mechanismsPlainAndScram); err != nil {
					return err
				}
				_, err := s.next()
				sent <- err == nil
				return nil
			})
			_, _, err := OpenC2S(testContext(t), nc, C2SConfig{Domain: "example.com", Username: "alice", Password: "pw", AllowPlaintext: true, Mechanism: mech, Timeout: 5 * time.Second})
			if err == nil || !strings.Contains(err.Error(), mech) {
				t.Fatalf("OpenC2S = %v, want an error naming %s", err, mech)
			}
			if <-sent {
				t.Fatal("the client sent an element after refusing the mechanism")
			}
		})
	}
}

// Without STARTTLS on offer and without AllowPlaintext or SkipTLS the
// client refuses to authenticate.
func TestOpenC2STLSRequired(t *testing.T) {
	nc := startScripted(t, func(s *scriptedServer) error {
		return s.openStream(mechanismsPlainAndScram)
	})
	_, _, err := OpenC2S(testContext(t), nc, C2SConfig{Domain: "example.com", Username: "alice", Password: "pw", Timeout: 5 * time.Second})
	if !errors.Is(err, ErrTLSRequired) {
		t.Fatalf("OpenC2S = %v, want ErrTLSRequired", err)
	}
}

// A stream error during negotiation comes back as a *StreamError with its
// condition, content and the raw element.
func TestOpenC2SStreamError(t *testing.T) {
	const streamErr = "<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>10.0.0.2:5222</see-other-host></stream:error>"
	nc := startScripted(t, func(s *scriptedServer) error {
		s.dec = wire.NewDecoder(s.br, 0)
		if _, err := s.dec.Header(); err != nil {
			return err
		}
		return s.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='s1' version='1.0'>" + streamErr)
	})
	_, _, err := OpenC2S(testContext(t), nc, C2SConfig{Domain: "example.com", Username: "alice", Password: "pw", Timeout: 5 * time.Second})
	var se *StreamError
	if !errors.As(err, &se) || se.Condition != "see-other-host" || se.Content != "10.0.0.2:5222" || !strings.Contains(se.Raw, "see-other-host") {
		t.Fatalf("OpenC2S = %#v, want see-other-host with content and raw element", err)
	}
}
