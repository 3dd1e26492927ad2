"""N aioxmpp sessions of one account, one after another, against one node.

Usage: aioxmpp_logins.py HOST PORT DOMAIN USER PASS N GAP

The same protocol as slixmpp_logins.py, with aioxmpp (resources aioK):
session k connects to HOST:PORT over STARTTLS (certificate not checked),
becomes available and stays connected; GAP seconds later session k+1
starts. Printed JSON lines: {"event": "online", "jid", "peer"},
{"event": "self_presence", "jid"}, {"event": "error"} (exit status 1) when
a session did not come online, {"event": "done"}. Ends within 25 seconds.
"""

import asyncio
import contextlib
import json
import logging
import sys

import aioxmpp
import aioxmpp.connector
import aioxmpp.dispatcher

STEP_TIMEOUT = 10
PRESENCE_TIMEOUT = 5
TOTAL_TIMEOUT = 25


def emit(**kw):
    print(json.dumps(kw), flush=True)


async def session(stack, host, port, jid, password):
    client = aioxmpp.PresenceManagedClient(
        aioxmpp.JID.fromstr(jid),
        aioxmpp.make_security_layer(password, no_verify=True),
        override_peer=[(host, port, aioxmpp.connector.STARTTLSConnector())],
    )
    own = asyncio.Event()

    def on_presence(p):
        if str(p.from_) == str(client.local_jid) and not own.is_set():
            emit(event="self_presence", jid=str(client.local_jid))
            own.set()

    client.summon(aioxmpp.dispatcher.SimplePresenceDispatcher).register_callback(
        aioxmpp.PresenceType.AVAILABLE, None, on_presence)
    # Register before connecting: the reflected presence may come at once.
    client.set_presence(aioxmpp.PresenceState(True), "online")
    try:
        await asyncio.wait_for(stack.enter_async_context(client.connected()), STEP_TIMEOUT)
    except Exception as e:
        raise RuntimeError("%s did not come online: %s: %s" % (jid, type(e).__name__, e))
    peer = client.stream._xmlstream.transport.get_extra_info("peername")
    emit(event="online", jid=str(client.local_jid), peer="%s:%d" % (peer[0], peer[1]))
    return own


async def run(host, port, domain, user, password, n, gap):
    async with contextlib.AsyncExitStack() as stack:
        owns = []
        for k in range(n):
            owns.append(await session(stack, host, port, "%s@%s/aio%d" % (user, domain, k), password))
            await asyncio.sleep(gap)
        try:
            await asyncio.wait_for(asyncio.gather(*(o.wait() for o in owns)), PRESENCE_TIMEOUT)
        except asyncio.TimeoutError:
            pass  # the test asserts on the self_presence events
    emit(event="done")


def main():
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    host, port, domain, user, password, n, gap = sys.argv[1:8]
    try:
        asyncio.run(asyncio.wait_for(run(host, int(port), domain, user, password, int(n), float(gap)), TOTAL_TIMEOUT))
    except Exception as e:  # reported as a JSON line, exit status 1
        emit(event="error", error="%s: %s" % (type(e).__name__, e))
        sys.exit(1)


if __name__ == "__main__":
    main()
