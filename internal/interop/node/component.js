"use strict";
// An @xmpp/component processor against an xcollect node (XEP-0114).
//
// Usage: node component.js HOST PORT COMPONENT_JID SECRET COUNT
//
// It authenticates with the shared secret, prints {"event":"online"} and
// then one JSON line per message it receives; it stops after COUNT messages
// and its answer to the node's ping that follows them (the node deletes
// rows of a component without XEP-0198 only once such a ping is answered;
// @xmpp/component answers it by itself), or after 25 seconds. The Go test
// asserts on the lines.

const { component } = require("@xmpp/component");

const [host, port, domain, password, count] = process.argv.slice(2);
const want = parseInt(count, 10);

function emit(o) {
  process.stdout.write(JSON.stringify(o) + "\n");
}

const xmpp = component({ service: `xmpp://${host}:${port}`, domain, password });
xmpp.reconnect.stop();
if (process.env.XMPP_TRACE === "1") {
  xmpp.on("output", (str) => process.stderr.write(`>> ${str}\n`));
  xmpp.on("input", (str) => process.stderr.write(`<< ${str}\n`));
}

let got = 0;
let stopping = false;

function stop() {
  if (stopping) return;
  stopping = true;
  xmpp.stop().then(
    () => {
      emit({ event: "done" });
      process.exit(0);
    },
    (err) => {
      emit({ event: "error", error: String(err) });
      process.exit(1);
    },
  );
}

// The answer to a ping from the node after the last message: stop then.
xmpp.on("send", (el) => {
  if (got === want && el.is("iq") && (el.attrs.type === "result" || el.attrs.type === "error")) stop();
});
xmpp.on("error", (err) => emit({ event: "client_error", error: String(err) }));
xmpp.on("online", (address) => emit({ event: "online", jid: address.toString() }));
xmpp.on("stanza", (st) => {
  if (!st.is("message")) {
    emit({ event: "stanza", name: st.name, from: st.attrs.from || "", type: st.attrs.type || "" });
    return;
  }
  emit({
    event: "message",
    from: st.attrs.from || "",
    to: st.attrs.to || "",
    id: st.attrs.id || "",
    type: st.attrs.type || "",
    body: st.getChildText("body"),
  });
  got++;
});

setTimeout(() => {
  emit({ event: "error", error: `total timeout after ${got} of ${want} messages` });
  process.exit(1);
}, 25000);

xmpp.start().catch((err) => {
  emit({ event: "error", error: String(err && err.stack ? err.stack : err) });
  process.exit(1);
});
