"""A slixmpp XEP-0114 component over direct TLS (listeners.component_tls).

Usage: slixmpp_component_tls.py HOST PORT COMPONENT_JID SECRET COUNT

It accepts the node's self-signed certificate, prints {"event":"online"}
after the handshake, one JSON line per message, and {"event":"done"} after
COUNT messages. It ends by itself within 25 seconds.
"""

import asyncio
import json
import logging
import ssl
import sys

from slixmpp import ComponentXMPP

TOTAL_TIMEOUT = 25


def emit(**kw):
    print(json.dumps(kw), flush=True)


class Processor(ComponentXMPP):
    def __init__(self, jid, secret, host, port, want):
        super().__init__(jid, secret, host, port)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.want = want
        self.got = 0
        self.finished = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", lambda _: emit(event="online", jid=str(self.boundjid)))
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("stream_error", lambda e: emit(event="stream_error", condition=e["condition"]))
        self.add_event_handler("disconnected", self.on_disconnected)

    def on_message(self, msg):
        emit(event="message", **{"from": str(msg["from"]), "to": str(msg["to"]), "id": msg["id"], "body": msg["body"]})
        self.got += 1
        if self.got == self.want and not self.finished.done():
            self.finished.set_result(True)

    def on_disconnected(self, _):
        if not self.finished.done():
            self.finished.set_exception(RuntimeError("disconnected after %d messages" % self.got))


async def main():
    host, port, jid, secret, count = sys.argv[1:6]
    p = Processor(jid, secret, host, int(port), int(count))
    p.connect(host, int(port), use_ssl=True)
    try:
        await asyncio.wait_for(p.finished, TOTAL_TIMEOUT)
        emit(event="done")
    except Exception as e:  # the Go test reports it
        emit(event="error", error=repr(e))
    p.disconnect()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main())
