"use strict";
// Two @xmpp/client sessions, alice and bob, against an xcollect node.
//
// Usage: NODE_TLS_REJECT_UNAUTHORIZED=0 node client.js HOST PORT DOMAIN ALICE_PASS BOB_PASS
//
// Both log in over STARTTLS (self-signed certificate) with SCRAM-SHA-1, the
// mechanism @xmpp/client prefers. alice subscribes to bob; bob approves and
// subscribes back; alice approves. Each waits for the other's available
// presence. alice sends a chat to bob, bob echoes it, alice waits for the
// echo. Every observation is one JSON line on stdout; the Go test asserts on
// them. The script ends by itself within 25 seconds.

const { client, xml } = require("@xmpp/client");

const [host, port, domain, alicePass, bobPass] = process.argv.slice(2);
const STEP_TIMEOUT = 10000;

function emit(o) {
  process.stdout.write(JSON.stringify(o) + "\n");
}

function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

function within(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("timeout: " + what)), STEP_TIMEOUT);
    }),
  ]).finally(() => clearTimeout(timer));
}

function session(who, password) {
  const xmpp = client({
    service: `xmpp://${host}:${port}`,
    domain,
    username: who,
    password,
    resource: "node",
  });
  xmpp.reconnect.stop();
  const s = { who, xmpp, peerPresence: deferred(), messages: [], gotMessage: null, online: deferred() };
  let tlsSeen = false;
  const trace = process.env.XMPP_TRACE === "1";
  xmpp.on("output", (str) => {
    if (trace) process.stderr.write(`${who} >> ${str}\n`);
    const m = /<auth [^>]*mechanism=["']([^"']+)["']/.exec(str);
    if (m) emit({ who, event: "sasl", mech: m[1] });
  });
  xmpp.on("input", (str) => {
    if (trace) process.stderr.write(`${who} << ${str}\n`);
    if (!tlsSeen && /<proceed [^>]*urn:ietf:params:xml:ns:xmpp-tls/.test(str)) {
      tlsSeen = true;
      emit({ who, event: "starttls" });
    }
  });
  xmpp.on("error", (err) => emit({ who, event: "client_error", error: String(err) }));
  xmpp.on("online", (address) => {
    emit({ who, event: "online", jid: address.toString() });
    s.online.resolve();
  });
  xmpp.on("stanza", async (st) => {
    const from = st.attrs.from || "";
    if (st.is("presence")) {
      const type = st.attrs.type || "available";
      if (from === xmpp.jid.toString()) return;
      emit({ who, event: "presence", from, type });
      if (type === "subscribe") {
        await xmpp.send(xml("presence", { to: from, type: "subscribed" }));
        if (who === "bob") await xmpp.send(xml("presence", { to: from, type: "subscribe" }));
      } else if (type === "available" && from.split("/")[0] !== xmpp.jid.bare().toString()) {
        s.peerPresence.resolve(from);
      }
    } else if (st.is("message")) {
      const body = st.getChildText("body");
      if (body === null) return;
      const type = st.attrs.type || "normal";
      emit({ who, event: "message", from, to: st.attrs.to || "", type, body });
      if (who === "bob" && !body.startsWith("echo: ")) {
        await xmpp.send(xml("message", { to: from, type }, xml("body", {}, "echo: " + body)));
      }
      if (s.gotMessage) s.gotMessage(body);
    }
  });
  return s;
}

async function main() {
  const alice = session("alice", alicePass);
  const bob = session("bob", bobPass);
  await within(Promise.all([alice.xmpp.start(), bob.xmpp.start()]), "login");
  await alice.xmpp.send(xml("presence"));
  await bob.xmpp.send(xml("presence"));

  await alice.xmpp.send(xml("presence", { to: "bob@" + domain, type: "subscribe" }));
  await within(Promise.all([alice.peerPresence.promise, bob.peerPresence.promise]), "presence both ways");

  const echo = new Promise((resolve) => {
    alice.gotMessage = (body) => body.startsWith("echo: ") && resolve(body);
  });
  await alice.xmpp.send(xml("message", { to: "bob@" + domain, type: "chat" }, xml("body", {}, "hello from @xmpp/client")));
  await within(echo, "echo");

  await within(Promise.all([alice.xmpp.stop(), bob.xmpp.stop()]), "stop");
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
