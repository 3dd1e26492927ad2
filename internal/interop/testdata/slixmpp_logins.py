"""N slixmpp sessions of one account, one after another, against one node.

Usage: slixmpp_logins.py HOST PORT DOMAIN USER PASS N GAP

Session k (resource slixK) connects to HOST:PORT over STARTTLS (the node's
certificate is not checked), waits for session_start, sends its available
presence and stays connected; GAP seconds later session k+1 starts. Every
session waits for its own presence to come back from the server (RFC 6121
section 4.2.2). At the end all sessions disconnect.

Printed JSON lines: {"event": "online", "jid", "peer"} when a session is
bound (peer: the address it is connected to), {"event": "self_presence",
"jid"} when its own presence came back, {"event": "stream_error",
"condition", "text"}, {"event": "error"} (exit status 1) when a session did
not come online, {"event": "done"}. The script ends within 25 seconds.
"""

import asyncio
import json
import logging
import ssl
import sys

import slixmpp

STEP_TIMEOUT = 10
PRESENCE_TIMEOUT = 5
TOTAL_TIMEOUT = 25


def emit(**kw):
    print(json.dumps(kw), flush=True)


class Session(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.online = asyncio.get_event_loop().create_future()
        self.own = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("presence_available", self.on_available)
        self.add_event_handler("stream_error", lambda e: emit(event="stream_error", jid=str(self.boundjid), condition=e["condition"], text=e["text"]))

    def on_start(self, _):
        peer = self.transport.get_extra_info("peername")
        emit(event="online", jid=str(self.boundjid), peer="%s:%d" % (peer[0], peer[1]))
        self.send_presence()
        if not self.online.done():
            self.online.set_result(True)

    def on_available(self, p):
        if str(p["from"]) == str(self.boundjid) and not self.own.is_set():
            emit(event="self_presence", jid=str(self.boundjid))
            self.own.set()


async def run(host, port, domain, user, password, n, gap):
    sessions = []
    for k in range(n):
        s = Session("%s@%s/slix%d" % (user, domain, k), password)
        sessions.append(s)
        s.connect(address=(host, port), force_starttls=True)
        try:
            await asyncio.wait_for(s.online, STEP_TIMEOUT)
        except asyncio.TimeoutError:
            raise RuntimeError("session %d did not come online" % k)
        await asyncio.sleep(gap)
    try:
        await asyncio.wait_for(asyncio.gather(*(s.own.wait() for s in sessions)), PRESENCE_TIMEOUT)
    except asyncio.TimeoutError:
        pass  # the test asserts on the self_presence events
    for s in sessions:
        s.disconnect()
    emit(event="done")


def main():
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    host, port, domain, user, password, n, gap = sys.argv[1:8]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(asyncio.wait_for(run(host, int(port), domain, user, password, int(n), float(gap)), TOTAL_TIMEOUT))
    except Exception as e:  # reported as a JSON line, exit status 1
        emit(event="error", error="%s: %s" % (type(e).__name__, e))
        sys.exit(1)


if __name__ == "__main__":
    main()
