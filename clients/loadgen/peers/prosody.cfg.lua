-- Prosody 0.12 for `make bench` (scripts/bench.sh substitutes @DIR@,
-- @C2S@ and @COMP@). Tuned fairly: no mod_limits (no rate limits or
-- shaping), epoll backend, stanza size limit as xcollect's (256 KiB),
-- SCRAM storage (internal_hashed), XEP-0198 (mod_smacks) on.
pidfile = "@DIR@/prosody.pid"
data_path = "@DIR@/data"
log = { warn = "@DIR@/prosody.log" }
network_backend = "epoll"
c2s_ports = { @C2S@ }
c2s_interfaces = { "127.0.0.1" }
c2s_direct_tls_ports = { }
component_ports = { @COMP@ }
component_interfaces = { "127.0.0.1" }
s2s_ports = { }
http_ports = { }
https_ports = { }
c2s_require_encryption = false
s2s_require_encryption = false
allow_registration = false
authentication = "internal_hashed"
storage = "internal"
c2s_stanza_size_limit = 262144
modules_enabled = {
	"roster"; "saslauth"; "tls"; "disco"; "smacks"; "ping"; "posix";
}
modules_disabled = { "s2s"; "offline"; "c2s_limits"; "limits" }
certificates = "@DIR@/certs"
ssl = { key = "@DIR@/cert.key"; certificate = "@DIR@/cert.crt" }

VirtualHost "localhost"

Component "collector.localhost"
	component_secret = "secret"
