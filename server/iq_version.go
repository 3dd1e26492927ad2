package server

import "xcollect.dev/xcollect/internal/wire"

// nsVersion is XEP-0092 Software Version: the server's name and version.
const nsVersion = "jabber:iq:version"

// version answers a software version get.
func (s *Server) version(_ *Session, st *stanza) []byte {
	b := []byte("<query xmlns='" + nsVersion + "'><name>xcollect</name><version>")
	b = wire.AppendText(b, s.cfg.Version)
	b = append(b, "</version></query>"...)
	return iqResult(st, b)
}
