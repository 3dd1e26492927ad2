#!/usr/bin/env python3
"""Turns scripts/bench.sh results (JSON lines) into BENCHMARKS.md on stdout.

usage: bench_report.py results.jsonl machine.txt peer-notes.txt "parameters"
clients/loadgen/BENCHMARKS-notes.md, when present, is appended verbatim.
"""
import json
import os
import statistics
import sys

res_path, machine_path, notes_path, params = sys.argv[1:5]
rows = [json.loads(l) for l in open(res_path) if l.strip()]
machine = open(machine_path).read().strip()
peer_notes = open(notes_path).read().strip() if os.path.exists(notes_path) else ""

ORDER = ["xcollect-embedded", "xcollect-postgres", "prosody", "ejabberd"]
servers = [s for s in ORDER if any(r["server"] == s for r in rows)]
XC = [s for s in servers if s.startswith("xcollect")]
PEERS = [s for s in servers if not s.startswith("xcollect")]


def vals(case, server, key):
    out = []
    for r in rows:
        if r["case"] == case and r["server"] == server and r["result"] and r["result"].get(key) is not None:
            out.append(r["result"][key])
    return out


def fails(case, server):
    return sum(1 for r in rows if r["case"] == case and r["server"] == server and not r["result"])


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.2f}"
    return f"{int(v):,}"


def med(case, server, key):
    v = vals(case, server, key)
    return statistics.median(v) if v else None


def cell(case, server, key):
    v = vals(case, server, key)
    if not v:
        return "failed" if fails(case, server) else "–"
    s = f"{fmt(statistics.median(v))} ({fmt(min(v))}–{fmt(max(v))})"
    if fails(case, server):
        s += f", {fails(case, server)} failed"
    return s


def ratio(case, key, xc, peer):
    a, b = med(case, xc, key), med(case, peer, key)
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"


def table(title, case, cols, ratio_key, better, intro=""):
    print(f"### {title}\n")
    if intro:
        print(intro + "\n")
    print("| server | " + " | ".join(c[1] for c in cols) + " | runs |")
    print("|---|" + "---|" * (len(cols) + 1))
    for s in servers:
        n = len(vals(case, s, cols[0][0]))
        print(f"| {s} | " + " | ".join(cell(case, s, c[0]) for c in cols) + f" | {n} |")
    if XC and PEERS:
        print()
        pairs = [f"{x}/{p} = **{ratio(case, ratio_key, x, p)}**" for x in XC for p in PEERS]
        print(f"Ratio of medians ({ratio_key}, {better} is better): " + "; ".join(pairs) + ".")
    print()


print("# Benchmarks\n")
print("Written by `make bench` (scripts/bench.sh, load from clients/loadgen). Every figure is "
      "median (min–max) of the runs; all servers ran side by side on the same machine, "
      "round-robin (run 1 of every server, then run 2, …), with the load generator on "
      "the same cores, so ratios matter more than absolute numbers.\n")
print("```\n" + machine + "\n" + params + "\n```\n")
print("Servers: **xcollect-embedded** (embedded store), **xcollect-postgres** (throw-away "
      "Postgres via internal/pgtest/cmd/pgtmp, fsync on), **prosody** and **ejabberd** (Debian "
      "packages, configs in clients/loadgen/peers/, no rate limits or shapers, XEP-0198 on). "
      "Users user0…user49 registered beforehand (xcollect user add, prosodyctl register, "
      "ejabberdctl register). Plaintext c2s with SCRAM-SHA-1 unless marked STARTTLS.\n")
if peer_notes:
    print("Peer setup problems in this run:\n\n```\n" + peer_notes + "\n```\n")

print("## Delivery guarantee\n")
print("| server | client ack (XEP-0198 `<a/>`) | to an absent component (offline scenario, measured) |")
print("|---|---|---|")
guar = {
    "xcollect-embedded": "after the report is committed (fsync) to the embedded queue",
    "xcollect-postgres": "after the report is committed to Postgres (fsync on)",
    "prosody": "on receipt, in memory (not durable)",
    "ejabberd": "on receipt, in memory (not durable)",
}
for s in servers:
    sent, rec, bnc = med("offline", s, "sent"), med("offline", s, "component_received"), med("offline", s, "bounced")
    errs = {}
    for r in rows:
        if r["case"] == "offline" and r["server"] == s and r["result"]:
            for k, v in (r["result"].get("errors_by_type") or {}).items():
                errs[k] = errs.get(k, 0) + v
    e = (" (" + ", ".join(f"{k}" for k in errs) + ")") if errs else ""
    lost = med("offline", s, "silently_lost")
    if sent is None:
        o = "not measured"
    else:
        o = f"of {fmt(sent)} sent: {fmt(bnc)} bounced{e}, {fmt(rec)} delivered when it connected, {fmt(lost)} silently lost (medians)"
    print(f"| {s} | {guar.get(s, '?')} | {o} |")
print()

print("## Results\n")
table("reports: throughput to a component", "reports",
      [("reports_per_s", "delivered reports/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("lost", "lost")],
      "reports_per_s", "higher",
      "50 clients, each with 10 reports (~200 bytes) in flight until the component has received "
      "them; latency is send → component receipt; lost = sent − received − bounced after a 10 s drain. "
      "xcollect's component enables XEP-0198 (rows deleted on ack); Prosody and ejabberd refuse "
      "XEP-0198 on component streams (plain XEP-0114).")
table("reports at a steady rate", "reports-rate",
      [("reports_per_s", "delivered reports/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("lost", "lost")],
      "p99_ms", "lower",
      "Same clients sending at a fixed total rate (open loop, window 10 as a bound).")
table("login: SCRAM-SHA-1, plaintext", "login-plain",
      [("logins_per_s", "logins/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("errors", "errors")],
      "logins_per_s", "higher",
      "Workers in a loop: connect, SCRAM-SHA-1, bind, close.")
table("login: STARTTLS + SCRAM-SHA-1", "login-starttls",
      [("logins_per_s", "logins/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("errors", "errors")],
      "logins_per_s", "higher")
table("idle sessions, plaintext: server RSS per session", "idle-plain",
      [("kib_per_session", "KiB/session")], "kib_per_session", "lower",
      "Authenticated, bound, no presence; VmRSS of the server process after − before, divided by the "
      "sessions (for xcollect-postgres the Postgres backends are not counted).")
table("idle sessions, STARTTLS: server RSS per session", "idle-tls",
      [("kib_per_session", "KiB/session")], "kib_per_session", "lower")

if any(r["case"] == "pgbench" for r in rows):
    print("### Postgres ceiling\n")
    tps = [r["result"]["tps"] for r in rows if r["case"] == "pgbench" and r["result"] and r["result"].get("tps")]
    print("pgbench, one-row INSERT (~200-byte bytea) per transaction, same client count, same "
          "Postgres (fsync on) as xcollect-postgres, run after the xcollect runs.\n")
    if tps:
        print(f"| | transactions/s |\n|---|---|\n| pgbench | {fmt(statistics.median(tps))} ({fmt(min(tps))}–{fmt(max(tps))}) |")
        xp = med("reports", "xcollect-postgres", "reports_per_s")
        if xp:
            print(f"| xcollect-postgres delivered reports/s | {fmt(xp)} |\n")
            print(f"Ratio xcollect-postgres / pgbench ceiling = **{xp / statistics.median(tps):.2f}**.\n")
    else:
        print("pgbench failed (see bin/bench.log).\n")

notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "BENCHMARKS-notes.md")
if os.path.exists(notes):
    print(open(notes).read().strip())
