// xcollect dashboard: reads /ui/events (Server-Sent Events) with the admin
// token as a header and renders the node's numbers. No dependencies.
"use strict";

const historyPoints = 120; // one per event: two minutes at 1/s
const history = new Map(); // component → depths
let previous = null;       // the last snapshot, for rates
let seq = 0;

function $(id) { return document.getElementById(id); }

function takeToken() {
  // #token=… (automation) moves to session storage and leaves the address bar.
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("xcollect-token", decodeURIComponent(m[1]));
    clearHash();
  }
  return sessionStorage.getItem("xcollect-token");
}

function clearHash() {
  window.history.replaceState(null, "", location.pathname + location.search);
}

function age(seconds) {
  if (!seconds) return "–";
  if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + " s";
  if (seconds < 3600) return (seconds / 60).toFixed(1) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function sparkline(points) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  // The x axis spans the points kept so far (up to historyPoints), the y
  // axis 0 … the largest depth.
  const width = Math.max(1, points.length - 1);
  svg.setAttribute("viewBox", "0 0 " + width + " 28");
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1, ...points);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("vector-effect", "non-scaling-stroke");
  line.setAttribute("points", points.map((v, i) => i + "," + (27 - 26 * v / max)).join(" "));
  svg.appendChild(line);
  return svg;
}

function render(s) {
  seq++;
  $("node").textContent = s.node;
  $("sessions").textContent = s.sessions;
  if (previous) {
    const dt = (Date.parse(s.time) - Date.parse(previous.time)) / 1000;
    if (dt > 0) {
      $("rate-in").textContent = ((s.stanzas_in - previous.stanzas_in) / dt).toFixed(1);
      $("rate-out").textContent = ((s.stanzas_out - previous.stanzas_out) / dt).toFixed(1);
    }
  }
  previous = s;

  let queued = 0, oldest = 0;
  const body = $("components").tBodies[0];
  body.replaceChildren();
  for (const c of s.components || []) {
    queued += c.rows;
    oldest = Math.max(oldest, c.oldest_seconds);
    const h = history.get(c.jid) || [];
    h.push(c.rows);
    if (h.length > historyPoints) h.shift();
    history.set(c.jid, h);
    const tr = document.createElement("tr");
    tr.dataset.component = c.jid;
    tr.append(cell(c.jid), cell(c.rows, "num rows"),
      cell(age(c.oldest_seconds), "num oldest" + (c.oldest_seconds > 60 ? " late" : "")));
    const chart = document.createElement("td");
    chart.appendChild(sparkline(h));
    tr.append(chart, cell(c.connections, "num connections" + (c.connections === 0 && c.rows > 0 ? " late" : "")),
      cell(c.leased_senders + " / " + c.waiting_senders, "num"), cell(c.dead_letters, "num dead"));
    body.appendChild(tr);
  }
  $("queued").textContent = queued;
  $("oldest").textContent = age(oldest);
  $("oldest").className = "big" + (oldest > 60 ? " late" : "");
  $("queue-error").hidden = !s.queue_error;
  $("queue-error").textContent = s.queue_error ? "queue statistics: " + s.queue_error : "";

  const members = $("members").tBodies[0];
  members.replaceChildren();
  for (const m of s.members || []) {
    const tr = document.createElement("tr");
    tr.append(cell(m.node), cell(m.alive ? "alive" : "dead", m.alive ? "" : "late"), cell(m.sessions, "num"), cell(m.score.toFixed(0), "num"));
    members.appendChild(tr);
  }
  $("single").hidden = (s.members || []).length > 0;

  const errors = $("errors");
  errors.replaceChildren();
  for (const e of s.errors || []) {
    const li = document.createElement("li");
    li.textContent = new Date(e.time).toLocaleTimeString() + " " + e.level + ": " + e.message;
    errors.appendChild(li);
  }
  if (!errors.children.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "none";
    errors.appendChild(li);
  }
  $("updated").dataset.seq = seq;
  $("updated").textContent = "updated " + new Date(s.time).toLocaleTimeString();
}

function setStatus(on, text) {
  $("status").className = "status " + (on ? "on" : "off");
  $("status").textContent = text;
}

async function stream(token) {
  const resp = await fetch("events", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
  if (resp.status === 401 || resp.status === 404) {
    sessionStorage.removeItem("xcollect-token");
    setStatus(false, resp.status === 401 ? "wrong token" : "admin token not configured on the node");
    $("login").hidden = false;
    return false;
  }
  if (!resp.ok || !resp.body) throw new Error("events: " + resp.status);
  setStatus(true, "live");
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return true;
    buf += value;
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = event.split("\n").filter(l => l.startsWith("data: ")).map(l => l.slice(6)).join("\n");
      if (data) render(JSON.parse(data));
    }
  }
}

async function run() {
  for (;;) {
    const token = takeToken();
    if (!token) {
      $("login").hidden = false;
      return;
    }
    $("login").hidden = true;
    try {
      if (!(await stream(token))) return;
    } catch (e) {
      setStatus(false, "reconnecting");
    }
    await new Promise(r => setTimeout(r, 2000));
  }
}

$("login").addEventListener("submit", ev => {
  ev.preventDefault();
  sessionStorage.setItem("xcollect-token", $("token").value);
  $("token").value = "";
  run();
});
run();
