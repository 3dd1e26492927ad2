"use strict";
// N @xmpp/client sessions of one account, one after another, against one
// node: the protocol of testdata/slixmpp_logins.py (resources nodeK).
//
// Usage: NODE_TLS_REJECT_UNAUTHORIZED=0 node logins.js HOST PORT DOMAIN USER PASS N GAP
//
// Session k connects over STARTTLS, sends its available presence and stays
// connected; GAP seconds later session k+1 starts. @xmpp/client follows
// <see-other-host/> by itself, so "peer" tells where it really ended up.
// JSON lines: {"event": "online", "jid", "peer"}, {"event": "self_presence",
// "jid"}, {"event": "error"} (exit status 1), {"event": "done"}. Ends within
// 25 seconds.

const { client, xml } = require("@xmpp/client");

const [host, port, domain, user, password, n, gap] = process.argv.slice(2);
const STEP_TIMEOUT = 10000;
const PRESENCE_TIMEOUT = 5000;

function emit(o) {
  process.stdout.write(JSON.stringify(o) + "\n");
}

function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("timeout: " + what)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function session(k) {
  const xmpp = client({ service: `xmpp://${host}:${port}`, domain, username: user, password, resource: "node" + k });
  xmpp.reconnect.stop();
  let own;
  const gotOwn = new Promise((r) => (own = r));
  let peer = "";
  // the plain TCP socket, before STARTTLS wraps it (again after a redirect)
  xmpp.on("connect", () => (peer = `${xmpp.socket.remoteAddress}:${xmpp.socket.remotePort}`));
  xmpp.on("error", (err) => emit({ event: "client_error", error: String(err) }));
  xmpp.on("stanza", (st) => {
    if (st.is("presence") && !st.attrs.type && xmpp.jid && st.attrs.from === xmpp.jid.toString()) own();
  });
  const address = await within(xmpp.start(), STEP_TIMEOUT, `session ${k} online`);
  emit({ event: "online", jid: address.toString(), peer });
  await xmpp.send(xml("presence"));
  gotOwn.then(() => emit({ event: "self_presence", jid: address.toString() }));
  return { xmpp, gotOwn };
}

async function main() {
  const sessions = [];
  for (let k = 0; k < Number(n); k++) {
    sessions.push(await session(k));
    await sleep(Number(gap) * 1000);
  }
  await within(Promise.all(sessions.map((s) => s.gotOwn)), PRESENCE_TIMEOUT, "own presence").catch(() => {});
  await within(Promise.all(sessions.map((s) => s.xmpp.stop())), STEP_TIMEOUT, "stop");
  emit({ event: "done" });
}

const total = setTimeout(() => {
  emit({ event: "error", error: "total timeout" });
  process.exit(1);
}, 25000);

main().then(
  () => {
    clearTimeout(total);
    process.exit(0);
  },
  (err) => {
    emit({ event: "error", error: String(err && err.stack ? err.stack : err) });
    process.exit(1);
  },
);
