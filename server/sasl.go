package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/internal/connlimit"
	"xcollect.dev/xcollect/internal/wire"
	"xcollect.dev/xcollect/storage"
)

// SASL mechanisms. No -PLUS variant is offered: mellium.im/sasl's server
// has no channel binding (and panics on -PLUS).
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
	unknown  bool   // user has no account: the SCRAM challenge is fake
	attempts int
	slot     bool  // holds one of the address's concurrent-exchange slots
	tempErr  error // the store failed: not the client's fault
}

// lockedText is shown by the client when the account is locked out. It
// is the same whether the password was right or not.
const lockedText = "too many failed logins for this account: try again later"

// saslFailure writes a <failure/> with condition cond and, when text is
// not empty, a human-readable <text/>.
func (c *c2sConn) saslFailure(cond, text string) error {
	b := []byte("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><" + cond + "/>")
	if text != "" {
		b = append(b, "<text xml:lang='en'>"...)
		_ = xml.EscapeText(writerFunc(func(p []byte) (int, error) { b = append(b, p...); return len(p), nil }), []byte(text))
		b = append(b, "</text>"...)
	}
	b = append(b, "</failure>"...)
	return c.write(b)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

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
		if st.neg != nil {
			st.neg = nil
			return c.authFailed("incorrect-encoding", "response is not base64")
		}
		return c.saslFailure("incorrect-encoding", "")
	}
	switch el.Name.Local {
	case "abort":
		if st.neg == nil {
			return c.saslFailure("aborted", "")
		}
		// An abandoned exchange counts as a failed one: otherwise a
		// guesser could abort before the answer that would cost it.
		st.neg = nil
		return c.authFailed("aborted", "aborted by the client")
	case "auth":
		st.neg = nil
		st.user = ""
		st.unknown = false
		st.tempErr = nil
		st.mech = body.Mechanism
		if !contains(c.mechanisms(), body.Mechanism) {
			return c.saslFailure("invalid-mechanism", "")
		}
		if !st.slot {
			if !c.srv.authGuard.begin(remoteIP(c.raw), time.Now()) {
				c.log.Warn().Str("mechanism", st.mech).Msg("authentication refused: too many concurrent attempts from this address")
				return c.saslFailure("temporary-auth-failure", "too many authentication attempts in progress from your address")
			}
			st.slot = true
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
			return c.saslFailure("malformed-request", "")
		}
		return c.stepSCRAM(data)
	}
	return c.fail(wire.UnsupportedStanzaType, "")
}

// endExchange gives back the address's concurrent-exchange slot. It is
// called when an exchange ends and when the connection closes.
func (c *c2sConn) endExchange() {
	if c.saslSt != nil && c.saslSt.slot {
		c.saslSt.slot = false
		c.srv.authGuard.end(remoteIP(c.raw))
	}
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
		bare := local + "@" + c.domain
		cred, err := c.srv.credentials(bare)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			c.saslSt.tempErr = err
			return nil, nil, 0, sasl.ErrAuthn
		}
		k := cred.SHA256
		if mechName == mechSCRAMSHA1 {
			k = cred.SHA1
		}
		if err != nil || len(k.SaltedPassword) == 0 {
			// RFC 5802 §9: answer as for an existing account, with a
			// salt that stays the same for every probe; the exchange then
			// fails at the proof like a wrong password.
			c.saslSt.unknown = true
			salt, salted, iter := fakeSCRAM(c.srv.cfg.AuthSecret, mechName, bare)
			return salt, salted, iter, nil
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
	final := st.neg.State()&sasl.StepMask == sasl.ResponseSent
	more, resp, err := st.neg.Step(data)
	if err != nil {
		st.neg = nil
		// Never log err: mellium's SCRAM errors quote the client's
		// messages and the StoredKey.
		if st.tempErr != nil {
			return c.authFailed("temporary-auth-failure", "")
		}
		reason := "malformed or refused client-first message"
		switch {
		case final && scramProofRefused(err) && st.unknown:
			reason = "unknown account"
		case final && scramProofRefused(err):
			reason = "wrong password"
		case final:
			reason = "malformed client-final message"
		}
		if c.srv.authGuard.locked(c.bare(), time.Now()) {
			return c.authFailed("not-authorized", reason+" (account locked)")
		}
		return c.authFailed("not-authorized", reason)
	}
	if more {
		return c.write([]byte("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString(resp) + "</challenge>"))
	}
	st.neg = nil
	if c.srv.authGuard.locked(c.bare(), time.Now()) {
		return c.authFailed("not-authorized", "right password but the account is locked")
	}
	return c.authSucceeded(st.user, resp)
}

// bare is the account the current exchange names, or "".
func (c *c2sConn) bare() string {
	if c.saslSt == nil || c.saslSt.user == "" {
		return ""
	}
	return c.saslSt.user + "@" + c.domain
}

func (c *c2sConn) authPlain(data []byte) error {
	parts := bytes.Split(data, []byte{0})
	if len(parts) != 3 {
		return c.authFailed("not-authorized", "malformed PLAIN message")
	}
	local, err := c.localpart(string(parts[1]), string(parts[0]))
	if err != nil {
		return c.authFailed("not-authorized", "invalid username or authzid")
	}
	c.saslSt.user = local
	if c.srv.authGuard.locked(c.bare(), time.Now()) {
		return c.authFailed("not-authorized", "account locked")
	}
	cred, err := c.srv.credentials(c.bare())
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		c.saslSt.tempErr = err
		return c.authFailed("temporary-auth-failure", "")
	}
	if err != nil {
		// Spend the time a real check takes, so the answer's timing
		// does not tell that the account does not exist.
		salt, salted, iter := fakeSCRAM(c.srv.cfg.AuthSecret, mechSCRAMSHA256, c.bare())
		fake := storage.Credentials{SHA256: storage.ScramKeys{Salt: salt, SaltedPassword: salted, Iterations: int(iter)}}
		_ = fake.Verify(string(parts[2]))
		return c.authFailed("not-authorized", "unknown account")
	}
	if !cred.Verify(string(parts[2])) {
		return c.authFailed("not-authorized", "wrong password")
	}
	return c.authSucceeded(local, nil)
}

// authFailed ends the exchange with a failure of condition cond (reason
// is for the log only and must not hold secrets): it is counted against
// the address and the account, answered after the address's delay, and
// the stream is closed after maxAuthAttempts failures.
func (c *c2sConn) authFailed(cond, reason string) error {
	st := c.saslSt
	defer c.endExchange()
	if st.tempErr != nil {
		// RFC 6120 §6.5.12: the store is unreachable; the client may retry.
		c.log.Warn().Err(st.tempErr).Str("account", c.bare()).Msg("authentication impossible: store unavailable")
		st.tempErr = nil
		return c.saslFailure("temporary-auth-failure", "")
	}
	st.attempts++
	c.srv.stats.AuthFailures.Add(1)
	c.srv.stats.countLogin(st.mech, false)
	now := time.Now()
	account := c.bare()
	delay := c.srv.authGuard.fail(remoteIP(c.raw), account, now)
	text := ""
	if c.srv.authGuard.locked(account, now) {
		text = lockedText
	}
	c.log.Warn().Str("account", account).Str("mechanism", st.mech).Str("reason", reason).
		Bool("locked", text != "").Dur("delay", delay).Int("attempt", st.attempts).Msg("authentication failed")
	if !c.sleep(delay) {
		return errors.New("server: shutting down")
	}
	if err := c.saslFailure(cond, text); err != nil {
		return err
	}
	if st.attempts >= maxAuthAttempts {
		return c.fail(wire.PolicyViolation, "too many failed authentication attempts")
	}
	return nil
}

// sleep waits d (the address's penalty); false when Shutdown began.
func (c *c2sConn) sleep(d time.Duration) bool { return connlimit.Sleep(c.srv.loops, d) }

func (c *c2sConn) authSucceeded(local string, final []byte) error {
	defer c.endExchange()
	// An address in penalty waits for every answer, success too: a
	// correct guess must cost what a wrong one does.
	if !c.sleep(c.srv.authGuard.delay(remoteIP(c.raw), time.Now())) {
		return errors.New("server: shutting down")
	}
	c.srv.authGuard.succeed(local + "@" + c.domain)
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
	c.srv.stats.countLogin(c.saslSt.mech, true)
	c.log.Debug().Str("user", local+"@"+c.domain).Str("mechanism", c.saslSt.mech).Msg("authenticated")
	return c.openStream()
}

// credentials loads a user's credentials with a bounded wait.
func (s *Server) credentials(bare string) (storage.Credentials, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	return s.store.Users().GetCredentials(ctx, bare)
}

func remoteIP(c net.Conn) string { return connlimit.IP(c) }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// scramProofRefused reports whether a SCRAM server error is a proof that
// does not match the stored key (a wrong password), as opposed to a
// malformed message. mellium.im/sasl returns no typed error and drops its
// "e=invalid-proof" answer on error, so the error's opening words decide
// (TestAuthFailureLogHasNoKeyMaterial pins them); the text itself, which quotes the
// StoredKey, is never logged.
func scramProofRefused(err error) bool {
	return strings.HasPrefix(err.Error(), "StoredKey in server")
}
