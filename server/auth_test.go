package server_test

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"mellium.im/sasl"

	"xcollect.dev/xcollect/internal/testutil"
	"xcollect.dev/xcollect/server"
)

// dialFrom opens a direct-TLS raw stream to addr from the loopback source
// address src ("" = any) and reads the features.
func dialFrom(t *testing.T, addr, src string) *raw {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	conn, err := tls.DialWithDialer(&d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := &raw{t: t, conn: conn, r: bufio.NewReader(conn)}
	r.write(header("example.com"))
	if got := r.readUntil("</stream:features>", 5*time.Second); !strings.Contains(got, "</stream:features>") {
		t.Fatalf("features: %q", got)
	}
	return r
}

// plain sends one SASL PLAIN attempt and returns the answer (up to
// </failure> or the <success> element), waiting at most d.
func (r *raw) plain(user, pass string, d time.Duration) string {
	r.write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + b64([]byte("\x00"+user+"\x00"+pass)) + "</auth>")
	var sb strings.Builder
	_ = r.conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for s := sb.String(); !strings.Contains(s, "</failure>") && !strings.Contains(s, "<success"); s = sb.String() {
		n, err := r.r.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return sb.String()
}

// A correct guess from an address in penalty must wait like a wrong one:
// otherwise a guesser drops every attempt not answered at once.
func TestPenaltyDelaysCorrectGuess(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "secret")
	n.addUser(t, "bob@example.com", "secret")
	r := dialFrom(t, n.tls, "")
	for i := 0; i < 4; i++ { // default: 3 free failures; the 4th waits 250ms
		if got := r.plain("bob", "wrong", 10*time.Second); !strings.Contains(got, "not-authorized") {
			t.Fatalf("attempt %d: %q", i, got)
		}
	}
	start := time.Now()
	got := dialFrom(t, n.tls, "").plain("alice", "secret", 10*time.Second)
	took := time.Since(start)
	if !strings.Contains(got, "<success") {
		t.Fatalf("right password: %q", got)
	}
	if took < 200*time.Millisecond {
		t.Fatalf("a right password from an address in penalty was answered in %v; want the penalty (250ms) too", took)
	}
}

// Many parallel connections from one address must not multiply the guess
// rate, and dropping an attempt that is not answered at once must teach
// the guesser nothing. The guesser here runs 16 connections, gives up on
// an answer after 100ms (before the penalty, a right password was answered
// at once, so silence meant "wrong") and tries the right password as its
// 60th guess.
func TestParallelGuessingFromOneAddressIsSlowed(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "secret")
	const workers, right = 16, 60
	run := 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	var next, answered, dropped, refused atomic.Int64
	var found atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			guess := next.Add(1)
			for tries := 0; ctx.Err() == nil && tries < 500; tries++ { // bounded
				d := net.Dialer{Timeout: time.Second}
				conn, err := tls.DialWithDialer(&d, "tcp", n.tls, &tls.Config{InsecureSkipVerify: true})
				if err != nil {
					continue
				}
				r := &raw{t: t, conn: conn, r: bufio.NewReader(conn)}
				r.write(header("example.com"))
				r.readUntil("</stream:features>", time.Second)
				pass := fmt.Sprintf("guess%d", guess)
				if guess == right {
					pass = "secret"
				}
				got := r.plain("alice", pass, 100*time.Millisecond)
				conn.Close()
				switch {
				case strings.Contains(got, "temporary-auth-failure"):
					refused.Add(1)
					time.Sleep(20 * time.Millisecond) // spare the shared CPU; a real guesser would not
					continue                          // the same guess again
				case strings.Contains(got, "<success"):
					found.Store(true)
					answered.Add(1)
				case strings.Contains(got, "not-authorized"):
					answered.Add(1)
				default:
					dropped.Add(1) // silence: presumed wrong
				}
				guess = next.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d connections from one address for %v: %d guesses tried (%.1f/s), %d answered (%.1f/s), %d dropped unanswered, %d refused as concurrent; right password recognised: %v",
		workers, run, answered.Load()+dropped.Load(), float64(answered.Load()+dropped.Load())/run.Seconds(),
		answered.Load(), float64(answered.Load())/run.Seconds(), dropped.Load(), refused.Load(), found.Load())
	if next.Load() > right && found.Load() {
		t.Fatalf("the guesser recognised the right password (guess %d) within 100ms although its address was in penalty", right)
	}
	// 3 free failures, then at most 3 exchanges at a time, each waiting
	// 250ms, 500ms, 1s, 2s…: about 3 + 3*6 in 3s.
	if answered.Load() > 25 {
		t.Fatalf("%d guesses answered in %v from one address; want at most 25", answered.Load(), run)
	}
}

// The account lock holds across source addresses, and a locked account
// answers not-authorized with a text whether the password is right or not.
func TestAccountLockoutAcrossAddresses(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "secret")
	for i := 0; i < 5; i++ { // default: 5 failures lock the account
		// One address per guess: no address reaches its penalty.
		src := fmt.Sprintf("127.0.0.%d", 10+i)
		if got := dialFrom(t, n.tls, src).plain("alice", "wrong", 10*time.Second); !strings.Contains(got, "not-authorized") {
			t.Fatalf("guess %d: %q", i, got)
		}
	}
	right := dialFrom(t, n.tls, "127.0.0.99").plain("alice", "secret", 10*time.Second)
	wrong := dialFrom(t, n.tls, "127.0.0.98").plain("alice", "wrong", 10*time.Second)
	for name, got := range map[string]string{"right": right, "wrong": wrong} {
		if !strings.Contains(got, "<not-authorized/>") || !strings.Contains(got, "<text") {
			t.Fatalf("%s password for a locked account from a new address: %q; want not-authorized with a text", name, got)
		}
	}
	if strings.ReplaceAll(right, "\n", "") != strings.ReplaceAll(wrong, "\n", "") {
		t.Fatalf("locked account answers differ: right password %q, wrong %q", right, wrong)
	}
	// SCRAM from yet another address is refused too.
	if _, err := dialMellium(t, n.addr, "alice@example.com/x", "secret", sasl.ScramSha256); err == nil {
		t.Fatal("SCRAM login to a locked account succeeded")
	}
	// Other accounts are not affected.
	n.addUser(t, "bob@example.com", "pw")
	if got := dialFrom(t, n.tls, "127.0.0.97").plain("bob", "pw", 10*time.Second); !strings.Contains(got, "<success") {
		t.Fatalf("another account: %q", got)
	}
}

// scramFirst sends a SCRAM-SHA-256 client-first message for user and
// returns the decoded server-first message, or the failure.
// The probe comes from src and stays open (an exchange in progress holds
// one of the address's concurrent slots).
func scramFirst(t *testing.T, n *testNode, user, src string) string {
	t.Helper()
	r := dialFrom(t, n.tls, src)
	r.write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>" + b64([]byte("n,,n="+user+",r=abcdefghijklmnop")) + "</auth>")
	got := r.readUntil("</challenge>", 5*time.Second)
	ch := between(got, ">", "</challenge>")
	if ch == "" {
		return got
	}
	return string(unb64(t, ch))
}

// SCRAM answers an unknown account with a challenge like a real one, with
// the same salt and iteration count on every probe.
func TestSCRAMUnknownAccountChallenge(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "secret")
	params := func(first string) (salt, iter string) {
		for _, f := range strings.Split(first, ",") {
			switch {
			case strings.HasPrefix(f, "s="):
				salt = f[2:]
			case strings.HasPrefix(f, "i="):
				iter = f[2:]
			}
		}
		return salt, iter
	}
	realSalt, realIter := params(scramFirst(t, n, "alice", "127.0.0.21"))
	first1 := scramFirst(t, n, "nobody", "127.0.0.22")
	s1, i1 := params(first1)
	s2, i2 := params(scramFirst(t, n, "nobody", "127.0.0.23"))
	if s1 == "" || i1 == "" {
		t.Fatalf("unknown account got %q; want a challenge with a salt and an iteration count", first1)
	}
	if s1 != s2 || i1 != i2 {
		t.Fatalf("two probes of one unknown account: salt %s/%s, i %s/%s; want them stable", s1, s2, i1, i2)
	}
	if i1 != realIter || len(unb64(t, s1)) != len(unb64(t, realSalt)) {
		t.Fatalf("unknown account: i=%s salt %d bytes; a real one: i=%s salt %d bytes", i1, len(unb64(t, s1)), realIter, len(unb64(t, realSalt)))
	}
	if s3, _ := params(scramFirst(t, n, "nobody2", "127.0.0.24")); s3 == s1 {
		t.Fatal("two unknown accounts got the same salt")
	}
	// The exchange then fails like a wrong password.
	if _, err := dialMellium(t, n.addr, "nobody@example.com/x", "secret", sasl.ScramSha256); err == nil || !strings.Contains(err.Error(), "not-authorized") {
		t.Fatalf("unknown account login: %v; want not-authorized", err)
	}
}

// <abort/> in the middle of an exchange counts as a failure.
func TestAbortCountsAsFailure(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "secret")
	r := dialFrom(t, n.tls, "")
	for i := 0; i < 2; i++ {
		r.write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>" + b64([]byte("n,,n=alice,r=abcdefghijklmnop")) + "</auth>")
		r.readUntil("</challenge>", 5*time.Second)
		r.write("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
		if got := r.readUntil("</failure>", 5*time.Second); !strings.Contains(got, "<aborted/>") {
			t.Fatalf("abort: %q", got)
		}
	}
	if got := n.srv.Stats().AuthFailures.Load(); got != 2 {
		t.Fatalf("AuthFailures = %d after two aborted exchanges; want 2", got)
	}
}

// A failed login is logged at warn with the account and the address, and
// the log holds no key material of the account nor the client's proof.
func TestAuthFailureLogHasNoKeyMaterial(t *testing.T) {
	var logs testutil.SyncBuffer
	n := startNode(t, func(c *server.Config) { c.Logger = zerolog.New(&logs).Level(zerolog.DebugLevel) })
	n.addUser(t, "alice@example.com", "secret")
	for _, m := range []sasl.Mechanism{sasl.ScramSha256, sasl.ScramSha1, sasl.Plain} {
		if _, err := dialMellium(t, n.addr, "alice@example.com/x", "Hunter2xyz", m); err == nil {
			t.Fatalf("%s: wrong password accepted", m.Name)
		}
	}
	// A malformed client-final message (its proof is echoed in mellium's
	// parse error).
	r := dialFrom(t, n.tls, "")
	r.write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>" + b64([]byte("n,,n=alice,r=abcdefghijklmnop")) + "</auth>")
	first := string(unb64(t, between(r.readUntil("</challenge>", 5*time.Second), ">", "</challenge>")))
	nonce := strings.TrimPrefix(strings.Split(first, ",")[0], "r=")
	proof := b64([]byte("PROOFPROOFPROOFPROOFPROOFPROOF12"))
	r.write("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + b64([]byte("c=biws,r="+nonce+",x=1,p="+proof)) + "</response>")
	r.readUntil("</failure>", 10*time.Second)

	cred, err := n.store.Users().GetCredentials(context.Background(), "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	salted := cred.SHA256.SaltedPassword
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	secrets := map[string][]byte{
		"salted password": salted, "ClientKey": clientKey, "StoredKey": stored[:],
		"ServerKey": mac(salted, "Server Key"), "SHA-1 salted password": cred.SHA1.SaltedPassword,
	}
	for name, k := range secrets {
		for _, form := range []string{b64(k), hex.EncodeToString(k), fmt.Sprintf("%q", k)[1:12], string(k)} {
			if strings.Contains(out, form) {
				t.Fatalf("the log holds the %s (%q):\n%s", name, form, out)
			}
		}
	}
	for _, bad := range []string{"StoredKey", proof, "PROOFPROOF", "Hunter2xyz"} {
		if strings.Contains(out, bad) {
			t.Fatalf("the log holds %q:\n%s", bad, out)
		}
	}
	fails := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "authentication failed") {
			fails++
			if !strings.Contains(line, `"level":"warn"`) || !strings.Contains(line, `"account":"alice@example.com"`) || !strings.Contains(line, `"remote":"127.0.0.1:`) {
				t.Fatalf("failure log line without warn level, account or remote address: %s", line)
			}
		}
	}
	if fails != 4 {
		t.Fatalf("%d failure lines; want 4:\n%s", fails, out)
	}
	// The reason tells guessing from broken clients: every one of these is
	// a wrong proof (the hand-made final message parses; its proof is
	// garbage), SCRAM as well as PLAIN. Before, SCRAM's were logged as
	// "malformed client-final message".
	if n := strings.Count(out, `"reason":"wrong password"`); n != 4 {
		t.Fatalf("%d failures logged as a wrong password; want 4:\n%s", n, out)
	}
}

// Connections over the per-address or the global cap get our stream
// header and a stream error before the close, on both listeners.
func TestConnectionCaps(t *testing.T) {
	n := startNode(t, func(c *server.Config) { c.MaxConns = 3; c.MaxConnsPerAddr = 2 })
	dial := func(addr, src string, useTLS bool) net.Conn {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		var conn net.Conn
		var err error
		if useTLS {
			conn, err = tls.DialWithDialer(&d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
		} else {
			conn, err = d.Dial("tcp", addr)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// open returns what the server answers to a stream header on a new
	// connection (features when admitted, a stream error when refused).
	open := func(addr, src string, useTLS bool) string {
		r := &raw{t: t, conn: dial(addr, src, useTLS)}
		r.r = bufio.NewReader(r.conn)
		r.write(header("example.com"))
		got := r.readUntil("</stream:features>", 5*time.Second)
		if strings.Contains(got, "stream:error") {
			got += r.readUntil("</stream:stream>", 5*time.Second)
		}
		return got
	}
	for i := 0; i < 2; i++ {
		if got := open(n.addr, "127.0.0.1", false); !strings.Contains(got, "</stream:features>") {
			t.Fatalf("connection %d: %q", i, got)
		}
	}
	got := open(n.addr, "127.0.0.1", false)
	if !strings.Contains(got, "<stream:stream") || !strings.Contains(got, "<policy-violation") || !strings.Contains(got, "</stream:stream>") {
		t.Fatalf("third connection from one address: %q; want our header and a policy-violation stream error", got)
	}
	if got := open(n.tls, "127.0.0.1", true); !strings.Contains(got, "<policy-violation") {
		t.Fatalf("third connection from one address on direct TLS: %q; want policy-violation", got)
	}
	if got := open(n.tls, "127.0.0.2", true); !strings.Contains(got, "</stream:features>") {
		t.Fatalf("another address: %q", got)
	}
	if got := open(n.addr, "127.0.0.3", false); !strings.Contains(got, "<resource-constraint") {
		t.Fatalf("fourth connection in all: %q; want resource-constraint", got)
	}
}

// Devices behind one NAT address log in at once: without failures the
// address's concurrent exchanges are not capped.
func TestParallelLoginsWithoutFailuresAreNotCapped(t *testing.T) {
	n := startNode(t, nil)
	n.addUser(t, "alice@example.com", "secret")
	const k = 12
	results := make(chan string, k)
	rs := make([]*raw, k)
	for i := range rs {
		rs[i] = dialFrom(t, n.tls, "")
		// Open k SCRAM exchanges at once (each holds a slot until answered).
		rs[i].write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>" + b64([]byte("n,,n=alice,r=abcdefghijklmnop")) + "</auth>")
	}
	for _, r := range rs {
		go func() { results <- r.readUntil("</challenge>", 5*time.Second) }()
	}
	for i := 0; i < k; i++ {
		if got := <-results; !strings.Contains(got, "<challenge") {
			t.Fatalf("exchange %d of %d from one address without failures: %q; want a challenge", i, k, got)
		}
	}
}
