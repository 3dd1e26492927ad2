"""One slixmpp client, bob, that reports every message it receives.

Usage: slixmpp_receiver.py HOST PORT DOMAIN BOB_PASS

bob logs in over STARTTLS (self-signed certificate) with SCRAM-SHA-256 as
bob@DOMAIN/slix and sends available presence. Every message is printed as
one JSON line (from, body); a stream error or a lost connection too. The
script ends after the message with body "done", or within 25 seconds.
"""

import asyncio
import json
import logging
import ssl
import sys

import slixmpp

TOTAL_TIMEOUT = 25


def emit(**kw):
    print(json.dumps(kw), flush=True)


class Receiver(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.done = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("stream_error", lambda e: emit(event="stream_error", condition=e["condition"]))
        self.add_event_handler("disconnected", lambda _: emit(event="disconnected"))

    def on_start(self, _):
        self.send_presence()
        emit(event="session", jid=str(self.boundjid))

    def on_message(self, msg):
        emit(event="message", **{"from": str(msg["from"]), "body": msg["body"]})
        if msg["body"] == "done" and not self.done.done():
            self.done.set_result(True)


async def run(host, port, domain, password):
    bob = Receiver("bob@%s/slix" % domain, password)
    bob.connect(address=(host, port), force_starttls=True)
    await bob.done
    bob.del_event_handler("disconnected", None)
    bob.disconnect()
    emit(event="done")


def main():
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    host, port, domain, password = sys.argv[1:5]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(asyncio.wait_for(run(host, int(port), domain, password), TOTAL_TIMEOUT))
    except Exception as e:  # reported as a JSON line, exit status 1
        emit(event="error", error="%s: %s" % (type(e).__name__, e))
        sys.exit(1)


if __name__ == "__main__":
    main()
