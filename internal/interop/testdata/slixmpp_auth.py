"""slixmpp logins, one per password, against an xcollect node.

Usage: slixmpp_auth.py HOST PORT JID PASSWORD...

Each attempt is a new connection (STARTTLS, the node's self-signed
certificate, SCRAM-SHA-256). It prints one JSON line per attempt:
{"event":"failure","condition":...,"text":...} with what the SASL failure
carried, or {"event":"session"}; then {"event":"done"}. Every attempt ends
within 15 seconds.
"""

import asyncio
import json
import logging
import ssl
import sys

import slixmpp

ATTEMPT_TIMEOUT = 15


def emit(**kw):
    print(json.dumps(kw), flush=True)


async def attempt(host, port, jid, password, n):
    c = slixmpp.ClientXMPP(jid, password, sasl_mech="SCRAM-SHA-256")
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    result = asyncio.get_event_loop().create_future()

    def finish(**kw):
        if not result.done():
            result.set_result(kw)

    c.add_event_handler("failed_auth", lambda f: finish(event="failure", attempt=n, condition=f["condition"], text=f["text"]))
    c.add_event_handler("session_start", lambda _: finish(event="session", attempt=n))
    c.add_event_handler("disconnected", lambda _: finish(event="disconnected", attempt=n))
    c.connect(address=(host, int(port)), force_starttls=True)
    try:
        emit(**await asyncio.wait_for(result, ATTEMPT_TIMEOUT))
    except asyncio.TimeoutError:
        emit(event="error", attempt=n, error="no answer in time")
    c.disconnect()


async def main():
    host, port, jid = sys.argv[1:4]
    for n, password in enumerate(sys.argv[4:]):
        await attempt(host, port, jid, password, n)
    emit(event="done")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main())
