"""A plain XEP-0114 slixmpp processor (no XEP-0198) against an xcollect node.

Usage: slixmpp_component.py HOST PORT COMPONENT_JID SECRET CRASH_AFTER

It prints {"event":"online"} once the handshake is done, then one JSON line
per message it receives. With CRASH_AFTER > 0 it dies abruptly (os._exit,
no end of stream, unread bytes left in its socket) in the handler of the
CRASH_AFTER-th message: a processor killed mid-stream. It answers the
node's XEP-0199 pings as slixmpp does (xep_0199). The script ends by
itself within 25 seconds.
"""

import asyncio
import json
import logging
import os
import sys

import slixmpp
from slixmpp.componentxmpp import ComponentXMPP

TOTAL_TIMEOUT = 25


def emit(**kw):
    print(json.dumps(kw), flush=True)


class Processor(ComponentXMPP):
    def __init__(self, jid, secret, host, port, crash_after):
        super().__init__(jid, secret, host, port)
        self.register_plugin("xep_0199")
        self.crash_after = crash_after
        self.got = 0
        self.add_event_handler("session_start", lambda _: emit(event="online"))
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("stream_error", lambda e: emit(event="stream_error", condition=e["condition"]))

    def on_message(self, msg):
        self.got += 1
        emit(event="message", id=msg["id"], **{"from": str(msg["from"])})
        if self.got == self.crash_after:
            emit(event="crash", after=self.got)
            os._exit(3)


def main():
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    host, port, jid, secret, crash_after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    p = Processor(jid, secret, host, port, crash_after)
    p.connect()
    loop = asyncio.get_event_loop()
    loop.call_later(TOTAL_TIMEOUT, lambda: (emit(event="timeout", got=p.got), os._exit(0)))
    loop.run_forever()


if __name__ == "__main__":
    main()
