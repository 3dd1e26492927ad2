"""Two slixmpp clients, alice and bob, against an xcollect node.

Usage: slixmpp_pair.py HOST PORT DOMAIN ALICE_PASS BOB_PASS

alice logs in with SCRAM-SHA-1 and enables XEP-0198, bob with SCRAM-SHA-256;
both accept the node's self-signed certificate over STARTTLS. Then: roster
get, alice subscribes to bob, bob auto-approves and subscribes back, alice
auto-approves; each waits for the other's available presence; alice sends a
chat to bob, bob echoes it, alice waits for the echo; alice requests a
XEP-0198 ack and waits for it.

Every observation is printed as one JSON line on stdout; the Go test asserts
on them. The script ends by itself within 25 seconds.
"""

import asyncio
import json
import logging
import ssl
import sys

import slixmpp

STEP_TIMEOUT = 10
TOTAL_TIMEOUT = 25


def emit(**kw):
    print(json.dumps(kw), flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, who, jid, password, mech, sm):
        super().__init__(jid, password, sasl_mech=mech)
        self.who = who
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        if sm:
            # Window 1000: acks only when the script asks for one.
            self.register_plugin("xep_0198", {"window": 1000, "allow_resume": False})
            self.add_event_handler("sm_enabled", self.on_sm_enabled)
            self.add_event_handler("stanza_acked", self.on_acked)
        self.roster.auto_authorize = True
        self.roster.auto_subscribe = True
        self.started = asyncio.get_event_loop().create_future()
        self.presence_from = {}
        self.acked = asyncio.Event()
        self.messages = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("auth_success", self.on_auth)
        self.add_event_handler("failed_all_auth", self.on_auth_failed)
        self.add_event_handler("tls_success", lambda _: emit(who=self.who, event="starttls"))
        self.add_event_handler("presence_available", self.on_available)
        self.add_event_handler("presence_subscribe", lambda p: emit(who=self.who, event="subscribe", **{"from": str(p["from"])}))
        self.add_event_handler("presence_subscribed", lambda p: emit(who=self.who, event="subscribed", **{"from": str(p["from"])}))
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("stream_error", lambda e: emit(who=self.who, event="stream_error", condition=e["condition"], text=e["text"]))

    def on_auth(self, _):
        emit(who=self.who, event="sasl", mech=self["feature_mechanisms"].mech.name)

    def on_auth_failed(self, _):
        emit(who=self.who, event="sasl_failed")
        if not self.started.done():
            self.started.set_exception(RuntimeError(self.who + ": authentication failed"))

    def on_sm_enabled(self, _):
        emit(who=self.who, event="sm_enabled")

    def on_acked(self, _):
        self.acked.set()

    async def on_start(self, _):
        emit(who=self.who, event="session", jid=str(self.boundjid))
        roster = await self.get_roster(timeout=STEP_TIMEOUT)
        items = roster["roster"]["items"]
        emit(who=self.who, event="roster", type=roster["type"], items=sorted(str(j) for j in items))
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def on_available(self, p):
        frm = str(p["from"])
        if frm == str(self.boundjid):
            return
        emit(who=self.who, event="presence", **{"from": frm, "type": "available"})
        self.presence_from[p["from"].bare] = frm

    def on_message(self, msg):
        if msg["type"] not in ("chat", "normal"):
            return
        emit(who=self.who, event="message", **{"from": str(msg["from"]), "to": str(msg["to"]), "type": msg["type"], "body": msg["body"]})
        self.messages.put_nowait(msg)
        if self.who == "bob" and not msg["body"].startswith("echo: "):
            msg.reply("echo: " + msg["body"]).send()


async def until(pred, what):
    for _ in range(STEP_TIMEOUT * 20):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(what)


async def run(host, port, domain, apass, bpass):
    alice = Client("alice", "alice@%s/slix" % domain, apass, "SCRAM-SHA-1", sm=True)
    bob = Client("bob", "bob@%s/slix" % domain, bpass, "SCRAM-SHA-256", sm=False)
    for c in (alice, bob):
        c.connect(address=(host, port), force_starttls=True)
    await asyncio.wait_for(asyncio.gather(alice.started, bob.started), STEP_TIMEOUT)

    alice.send_presence_subscription(pto="bob@" + domain)
    await until(lambda: "bob@" + domain in alice.presence_from and "alice@" + domain in bob.presence_from, "presence both ways")
    emit(who="alice", event="roster_state", bob=alice.client_roster["bob@" + domain]["subscription"])
    emit(who="bob", event="roster_state", alice=bob.client_roster["alice@" + domain]["subscription"])

    alice.send_message(mto="bob@" + domain, mbody="hello from slixmpp", mtype="chat")
    msg = await asyncio.wait_for(alice.messages.get(), STEP_TIMEOUT)
    del msg

    alice["xep_0198"].request_ack()
    await asyncio.wait_for(alice.acked.wait(), STEP_TIMEOUT)
    emit(who="alice", event="sm_ack", h=alice["xep_0198"].last_ack, sent=alice["xep_0198"].seq)

    for c in (alice, bob):
        c.disconnect()
    emit(event="done")


def main():
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    host, port, domain, apass, bpass = sys.argv[1:6]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(asyncio.wait_for(run(host, int(port), domain, apass, bpass), TOTAL_TIMEOUT))
    except Exception as e:  # reported as a JSON line, exit status 1
        emit(event="error", error="%s: %s" % (type(e).__name__, e))
        sys.exit(1)


if __name__ == "__main__":
    main()
