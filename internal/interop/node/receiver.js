"use strict";
// One @xmpp/client session, bob, that reports every message it receives.
//
// Usage: NODE_TLS_REJECT_UNAUTHORIZED=0 node receiver.js HOST PORT DOMAIN BOB_PASS
//
// bob logs in over STARTTLS (self-signed certificate) as bob@DOMAIN/node and
// sends available presence. Every message is one JSON line on stdout (from,
// body); errors and a lost connection too. The script ends after the
// message with body "done", or within 25 seconds.

const { client, xml } = require("@xmpp/client");

const [host, port, domain, bobPass] = process.argv.slice(2);

function emit(o) {
  process.stdout.write(JSON.stringify(o) + "\n");
}

const xmpp = client({ service: `xmpp://${host}:${port}`, domain, username: "bob", password: bobPass, resource: "node" });
xmpp.reconnect.stop();
let finished = false;

xmpp.on("error", (err) => emit({ event: "client_error", error: String(err) }));
xmpp.on("offline", () => {
  if (!finished) emit({ event: "disconnected" });
});
xmpp.on("online", async (address) => {
  await xmpp.send(xml("presence"));
  emit({ event: "session", jid: address.toString() });
});
xmpp.on("stanza", async (st) => {
  if (!st.is("message")) return;
  const body = st.getChildText("body");
  emit({ event: "message", from: st.attrs.from || "", body });
  if (body === "done") {
    finished = true;
    await xmpp.stop();
    emit({ event: "done" });
    process.exit(0);
  }
});

setTimeout(() => {
  emit({ event: "error", error: "total timeout" });
  process.exit(1);
}, 25000);

xmpp.start().catch((err) => {
  emit({ event: "error", error: String(err && err.stack ? err.stack : err) });
  process.exit(1);
});
