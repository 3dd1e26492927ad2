package server

import (
	"context"
	"hash/fnv"
	"time"
)

// deliverOffline sends the messages kept for sess's account (XEP-0160) and
// removes them once they are in the session's queue. With XEP-0198 they
// stay protected: a session that ends with them unacked puts them back.
func (s *Server) deliverOffline(ctx context.Context, sess *Session) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(sess.bare))
	mu := &s.offlineMu[h.Sum32()%uint32(len(s.offlineMu))]
	mu.Lock()
	defer mu.Unlock()
	msgs, err := s.store.Offline().FetchOffline(ctx, sess.bare, time.Now().Add(-s.cfg.OfflineExpiry))
	if err != nil {
		s.log.Warn().Err(err).Str("jid", sess.bare).Msg("fetch offline messages")
		return
	}
	if len(msgs) == 0 {
		return
	}
	// Deleted only once queued (and copied to the standby, in a cluster).
	copied := make(chan struct{}, len(msgs)) // never blocks a receipt
	for _, m := range msgs {
		sess.sendThen(m.Stanza, func() { copied <- struct{}{} })
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
wait:
	for range msgs {
		select {
		case <-copied:
		case <-t.C: // a link that never answers fails its receipts when it closes
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	if err := s.store.Offline().DeleteOffline(ctx, sess.bare, msgs[len(msgs)-1].ID); err != nil {
		s.log.Warn().Err(err).Str("jid", sess.bare).Msg("delete delivered offline messages")
	}
	sess.log.Debug().Int("count", len(msgs)).Msg("delivered offline messages")
}
