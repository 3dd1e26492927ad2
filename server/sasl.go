package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/storage"
)

// SASL mechanisms. No -PLUS variant is offered: mellium.im/sasl's server
// has no channel binding (and panics on -PLUS), see LIBRARY-NOTES.md.
const (
	mechSCRAMSHA256 = "SCRAM-SHA-256"
	mechSCRAMSHA1   = "SCRAM-SHA-1"
	mechPlain       = "PLAIN"
)

// maxAuthAttempts is how many failed SASL exchanges one stream may make
// before it is closed with policy-violation.
const maxAuthAttempts = 5

func (c *c2sConn) mechanisms() []string {
	m := []string{mechSCRAMSHA256, mechSCRAMSHA1}
	if c.secure {
		m = append(m, mechPlain) // PLAIN only over TLS
	}
	return m
}

// saslState is one SASL exchange in progress.
type saslState struct {
	mech     string
	neg      *sasl.Negotiator
	user     string // localpart the client claimed
	attempts int
	tempErr  error // the store failed: not the client's fault
}

// saslFailure writes a <failure/> with condition cond.
func (c *c2sConn) saslFailure(cond string) error {
	return c.write([]byte("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><" + cond + "/></failure>"))
}

// handleSASL runs one step of RFC 6120 §6 on the server side: <auth>,
// <response>, <abort>.
func (c *c2sConn) handleSASL(el *wire.Element) error {
	st := c.sasl()
	if c.authn {
		return c.fail(wire.PolicyViolation, "already authenticated")
	}
	if !c.secure && c.srv.cfg.RequireTLS {
		return c.fail(wire.PolicyViolation, "STARTTLS is required before authentication")
	}
	var body struct {
		Mechanism string `xml:"mechanism,attr"`
		Text      string `xml:",chardata"`
	}
	if err := xml.Unmarshal(el.Raw, &body); err != nil {
		return c.fail(wire.NotWellFormed, "")
	}
	data, err := decodeSASL(body.Text)
	if err != nil {
		st.neg = nil
		return c.saslFailure("incorrect-encoding")
	}
	switch el.Name.Local {
	case "abort":
		st.neg = nil
		return c.saslFailure("aborted")
	case "auth":
		st.neg = nil
		st.user = ""
		st.tempErr = nil
		st.mech = body.Mechanism
		if !contains(c.mechanisms(), body.Mechanism) {
			return c.saslFailure("invalid-mechanism")
		}
		if body.Mechanism == mechPlain {
			return c.authPlain(data)
		}
		st.neg = c.newSCRAM(body.Mechanism)
		if body.Text == "" { // no initial response: ask for it
			return c.write([]byte("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"))
		}
		return c.stepSCRAM(data)
	case "response":
		if st.neg == nil {
			return c.saslFailure("malformed-request")
		}
		return c.stepSCRAM(data)
	}
	return c.fail(wire.UnsupportedStanzaType, "")
}

func (c *c2sConn) sasl() *saslState {
	if c.saslSt == nil {
		c.saslSt = &saslState{}
	}
	return c.saslSt
}

// decodeSASL decodes SASL element text; "=" is an empty response.
func decodeSASL(text string) ([]byte, error) {
	text = string(bytes.TrimSpace([]byte(text)))
	if text == "" || text == "=" {
		return nil, nil
	}
	return base64.StdEncoding.DecodeString(text)
}

func (c *c2sConn) newSCRAM(mech string) *sasl.Negotiator {
	m := sasl.ScramSha256
	if mech == mechSCRAMSHA1 {
		m = sasl.ScramSha1
	}
	fetch := func(username, identity []byte, mechName string) ([]byte, []byte, int64, error) {
		local, err := c.localpart(string(username), string(identity))
		if err != nil {
			return nil, nil, 0, sasl.ErrAuthn
		}
		c.saslSt.user = local
		cred, err := c.srv.credentials(local + "@" + c.domain)
		if err != nil {
			if !errors.Is(err, storage.ErrNotFound) {
				c.saslSt.tempErr = err
			}
			return nil, nil, 0, sasl.ErrAuthn
		}
		k := cred.SHA256
		if mechName == mechSCRAMSHA1 {
			k = cred.SHA1
		}
		if len(k.SaltedPassword) == 0 {
			return nil, nil, 0, sasl.ErrAuthn
		}
		return k.Salt, k.SaltedPassword, int64(k.Iterations), nil
	}
	return sasl.NewServer(m, nil, sasl.SaltedCredentials(fetch))
}

// localpart checks the SASL identity and returns the normalised localpart.
// An authzid, if given, must be the user's own bare JID.
func (c *c2sConn) localpart(username, authzid string) (string, error) {
	j, err := jid.New(username, c.domain, "")
	if err != nil || j.Localpart() == "" {
		return "", fmt.Errorf("invalid username %q", username)
	}
	if authzid != "" && authzid != j.Bare().String() {
		return "", fmt.Errorf("authzid %q is not %q", authzid, j.Bare())
	}
	return j.Localpart(), nil
}

func (c *c2sConn) stepSCRAM(data []byte) error {
	st := c.saslSt
	more, resp, err := st.neg.Step(data)
	if err != nil {
		st.neg = nil
		return c.authFailed(err)
	}
	if more {
		return c.write([]byte("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString(resp) + "</challenge>"))
	}
	st.neg = nil
	return c.authSucceeded(st.user, resp)
}

func (c *c2sConn) authPlain(data []byte) error {
	parts := bytes.Split(data, []byte{0})
	if len(parts) != 3 {
		return c.authFailed(errors.New("malformed PLAIN message"))
	}
	local, err := c.localpart(string(parts[1]), string(parts[0]))
	if err != nil {
		return c.authFailed(err)
	}
	cred, err := c.srv.credentials(local + "@" + c.domain)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		c.saslSt.tempErr = err
		return c.authFailed(err)
	}
	if err != nil || !cred.Verify(string(parts[2])) {
		return c.authFailed(fmt.Errorf("bad password for %s", local))
	}
	return c.authSucceeded(local, nil)
}

func (c *c2sConn) authFailed(reason error) error {
	st := c.saslSt
	if st.tempErr != nil {
		// RFC 6120 §6.5.12: the store is unreachable; the client may retry.
		c.log.Warn().Err(st.tempErr).Msg("authentication impossible: store unavailable")
		st.tempErr = nil
		return c.saslFailure("temporary-auth-failure")
	}
	st.attempts++
	c.srv.stats.AuthFailures.Add(1)
	ip := remoteIP(c.raw)
	delay := c.srv.authFail.fail(ip)
	c.log.Info().Str("mechanism", st.mech).Str("user", st.user).Dur("delay", delay).Str("reason", reason.Error()).Msg("authentication failed")
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-c.srv.ctx.Done():
			t.Stop()
		}
	}
	if err := c.saslFailure("not-authorized"); err != nil {
		return err
	}
	if st.attempts >= maxAuthAttempts {
		return c.fail(wire.PolicyViolation, "too many failed authentication attempts")
	}
	return nil
}

func (c *c2sConn) authSucceeded(local string, final []byte) error {
	b := []byte("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'")
	if len(final) > 0 {
		b = append(b, '>')
		b = append(b, base64.StdEncoding.EncodeToString(final)...)
		b = append(b, "</success>"...)
	} else {
		b = append(b, "/>"...)
	}
	if err := c.write(b); err != nil {
		return err
	}
	c.user = local
	c.authn = true
	c.sentHeader = false // the stream restarts
	c.log.Debug().Str("user", local+"@"+c.domain).Str("mechanism", c.saslSt.mech).Msg("authenticated")
	return c.openStream()
}

// credentials loads a user's credentials with a bounded wait.
func (s *Server) credentials(bare string) (storage.Credentials, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	return s.store.Users().GetCredentials(ctx, bare)
}

func remoteIP(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// failLimiter slows down repeated failed logins from one address: the
// first few failures within the window are answered at once, then each one
// waits twice as long as the previous, up to 5s.
type failLimiter struct {
	mu     sync.Mutex
	free   int
	window time.Duration
	byIP   map[string]*failCount
}

type failCount struct {
	n    int
	last time.Time
}

func (l *failLimiter) init(free int, window time.Duration) {
	l.free, l.window, l.byIP = free, window, make(map[string]*failCount)
}

// fail records a failure from ip and returns how long to wait before
// answering it.
func (l *failLimiter) fail(ip string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	fc := l.byIP[ip]
	if fc == nil || now.Sub(fc.last) > l.window {
		fc = &failCount{}
		l.byIP[ip] = fc
	}
	fc.n++
	fc.last = now
	if fc.n <= l.free {
		return 0
	}
	d := 250 * time.Millisecond << min(fc.n-l.free-1, 5)
	return min(d, 5*time.Second)
}

// pruneLoop returns the loop that forgets old entries.
func (l *failLimiter) pruneLoop(ctx context.Context) func() {
	return func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				l.mu.Lock()
				for ip, fc := range l.byIP {
					if now.Sub(fc.last) > l.window {
						delete(l.byIP, ip)
					}
				}
				l.mu.Unlock()
			}
		}
	}
}
