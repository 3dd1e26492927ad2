package server

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/jid"
)

// peerMessage sends v as a control message of kind to s and reports
// whether s acked it within a few seconds.
func peerMessage(t *testing.T, s *Server, kind peerKind, v any) bool {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	acked := make(chan struct{}, 1)
	s.HandlePeerMessage("n9", byte(kind), b, func() { acked <- struct{}{} })
	select {
	case <-acked:
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}

// TestPeerMessageGarbageIsAcked: an unknown kind or a message that does
// not decode is dropped, but still acked (the sender must not wait for
// it or retry it).
func TestPeerMessageGarbageIsAcked(t *testing.T) {
	s := replicaServer(t, "n1", &fakeCluster{reachable: map[string]bool{}})
	for _, k := range []peerKind{0, 200, peerTakeoverRequest, peerTakeoverAnswer, peerDropMoved, peerStandbyUpdate, peerForward} {
		acked := false
		s.HandlePeerMessage("n9", byte(k), []byte("{not json"), func() { acked = true })
		if !acked {
			t.Fatalf("%v: bad message not acked", k)
		}
	}
}

// TestForwardedStanzaReachesLocalSession: a stanza forwarded to the node
// that now holds the session is queued there, then acked.
func TestForwardedStanzaReachesLocalSession(t *testing.T) {
	s := replicaServer(t, "n1", &fakeCluster{reachable: map[string]bool{}})
	full := jid.MustParse("alice@example.com/r")
	sess := &Session{srv: s, jid: full, full: full.String(), bare: "alice@example.com", log: s.log}
	s.sessions.add(sess)
	raw := []byte("<message from='bob@example.com/x' to='alice@example.com/r' id='f1'><body>hi</body></message>")
	if !peerMessage(t, s, peerForward, forwardedStanza{To: full.String(), Stanza: raw}) {
		t.Fatal("forwarded stanza not acked")
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if len(sess.out) != 1 || string(sess.out[0].b) != string(raw) {
		t.Fatalf("queue of the local session: %+v", sess.out)
	}
}

// TestForwardedStanzaIsNotForwardedAgain: a forwarded stanza whose session
// moved on is stored offline here, not forwarded a second time.
func TestForwardedStanzaIsNotForwardedAgain(t *testing.T) {
	fc := &fakeCluster{nodes: []string{"n1", "n3"}, reachable: map[string]bool{"n3": true}}
	s := replicaServer(t, "n1", fc)
	createUser(t, s, "alice@example.com")
	s.smDetached.moved("n1~x", "alice@example.com/r", "n3") // it moved on to n3
	raw := []byte("<message from='bob@example.com/x' to='alice@example.com/r' type='chat' id='f2'><body>hi</body></message>")
	if !peerMessage(t, s, peerForward, forwardedStanza{To: "alice@example.com/r", Stanza: raw}) {
		t.Fatal("forwarded stanza not acked")
	}
	if sent := fc.take(); len(sent) != 0 {
		t.Fatalf("forwarded again: %+v", sent)
	}
	msgs, err := s.store.Offline().FetchOffline(context.Background(), "alice@example.com", time.Time{})
	if err != nil || len(msgs) != 1 || !strings.Contains(string(msgs[0].Stanza), "id='f2'") {
		t.Fatalf("offline: %v %v", msgs, err)
	}
	// A stanza from a peer (not forwarded yet) for that JID goes to n3,
	// as a forward.
	s.DeliverFromPeerAcked("alice@example.com/r", raw, func() {})
	sent := fc.take()
	if len(sent) != 1 || sent[0].kind != peerForward || sent[0].node != "n3" {
		t.Fatalf("forward to the new node: %+v", sent)
	}
}

// TestTakeoverAnswerReachesRequest: a takeover answer goes to the request
// that waits for it; one nobody waits for is abandoned.
func TestTakeoverAnswerReachesRequest(t *testing.T) {
	s := replicaServer(t, "n1", &fakeCluster{reachable: map[string]bool{}})
	ch := s.moves.wait("req1", 1)
	defer s.finishTakeover("req1")
	if !peerMessage(t, s, peerTakeoverAnswer, takeoverResp{Req: "req1", From: "n2", HSet: true, H: 5}) {
		t.Fatal("answer not acked")
	}
	select {
	case r := <-ch:
		if !r.HSet || r.H != 5 || r.From != "n2" {
			t.Fatalf("answer: %+v", r)
		}
	default:
		t.Fatal("answer did not reach the waiting request")
	}
	if !peerMessage(t, s, peerTakeoverAnswer, takeoverResp{Req: "nobody"}) {
		t.Fatal("unexpected answer not acked")
	}
}
