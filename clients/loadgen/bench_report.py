#!/usr/bin/env python3
"""Turns scripts/bench.sh results (JSON lines) into BENCHMARKS.md on stdout.

usage: bench_report.py results.jsonl machine.txt peer-notes.txt "parameters"
clients/loadgen/BENCHMARKS-notes.md (the handwritten notes: kept here so
that a re-run does not lose them) is appended verbatim.
"""
import json
import os
import re
import statistics
import sys

res_path, machine_path, notes_path, params = sys.argv[1:5]
rows = [json.loads(l) for l in open(res_path) if l.strip()]
machine = open(machine_path).read().strip()
peer_notes = open(notes_path).read().strip() if os.path.exists(notes_path) else ""

ORDER = ["xcollect-embedded", "xcollect-postgres", "xcollect-cluster3", "prosody", "ejabberd"]
PG, CL = "xcollect-postgres", "xcollect-cluster3"
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


def ran(case, server):
    return any(r["case"] == case and r["server"] == server for r in rows)


def table(title, case, cols, ratio_key, better, intro="", more_ratios=()):
    print(f"### {title}\n")
    if intro:
        print(intro + "\n")
    here = [s for s in servers if ran(case, s)]
    print("| server | " + " | ".join(c[1] for c in cols) + " | runs |")
    print("|---|" + "---|" * (len(cols) + 1))
    for s in here:
        n = len(vals(case, s, cols[0][0]))
        print(f"| {s} | " + " | ".join(cell(case, s, c[0]) for c in cols) + f" | {n} |")
    xc = [s for s in XC if s in here]
    peers = [s for s in PEERS if s in here]
    if xc and peers:
        print()
        pairs = [f"{x}/{p} = **{ratio(case, ratio_key, x, p)}**" for x in xc for p in peers]
        print(f"Ratio of medians ({ratio_key}, {better} is better): " + "; ".join(pairs) + ".")
        for key, kbetter in more_ratios:
            pairs = [f"{x}/{p} = **{ratio(case, key, x, p)}**" for x in xc for p in peers]
            print()
            print(f"Ratio of medians ({key}, {kbetter} is better): " + "; ".join(pairs) + ".")
    if PG in here and CL in here:
        print()
        print(f"3 nodes vs 1 node on Postgres ({ratio_key}): {CL}/{PG} = **{ratio(case, ratio_key, CL, PG)}**.")
    if CL in servers and CL not in here:
        print()
        print(f"{CL}: not run for this case (the cluster runs only the reports cases).")
    print()


def go_duration_ms(d):
    """Go's time.Duration.String() (1m2.5s, 50.1ms, 850µs) in milliseconds."""
    unit = {"h": 3600e3, "m": 60e3, "s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "μs": 1e-3, "ns": 1e-6}
    parts = re.findall(r"([0-9.]+)(h|ms|m|s|us|µs|μs|ns)", d)
    if not parts:
        return None
    return sum(float(v) * unit[u] for v, u in parts)


print("# Benchmarks\n")
print("Written by `make bench` (scripts/bench.sh, load from clients/loadgen). Every figure is "
      "median (min–max) of the runs; all servers ran side by side on the same machine, "
      "round-robin (run 1 of every server, then run 2, …), with the load generator on "
      "the same cores, so ratios matter more than absolute numbers.\n")
print("```\n" + machine + "\n" + params + "\n```\n")
print("Servers: **xcollect-embedded** (embedded store), **xcollect-postgres** (throw-away "
      "Postgres via internal/pgtest/cmd/pgtmp, fsync on), **xcollect-cluster3** (three nodes on "
      "127.0.0.1, 127.0.0.2 and 127.0.0.3 sharing a second throw-away Postgres, fsync on; memberlist "
      "gossip and node links as in deployments/local-cluster.sh; the clients spread over the three "
      "nodes' c2s listeners, client i on node i mod 3; loadgen's component, the processor, on node 1 "
      "only, so two thirds of the reports cross from another node through the shared queue; "
      "steering off; reports cases only: login, idle and offline are not run on it), **prosody** and **ejabberd** (Debian "
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
    "xcollect-cluster3": "after the report is committed to the shared Postgres (fsync on), by the client's node",
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
        o = "not measured" + (" (offline case not run on the cluster)" if s == CL else "")
    else:
        o = f"of {fmt(sent)} sent: {fmt(bnc)} bounced{e}, {fmt(rec)} delivered when it connected, {fmt(lost)} silently lost (medians)"
    print(f"| {s} | {guar.get(s, '?')} | {o} |")
print()

print("## Results\n")
REPORT_COLS = [("reports_per_s", "delivered reports/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
               ("ack_p99_ms", "ack p99 ms"), ("server_cpu_us_per_report", "server CPU µs/report"),
               ("loadgen_cpu_us_per_report", "loadgen CPU µs/report"), ("lost", "lost")]
CPU_RATIO = (("server_cpu_us_per_report", "lower"),)
WORKLOADS = ("50 clients, each with 10 reports (~200 bytes) in flight until the component has received "
             "them (a client writes all the reports its free slots allow in one write); latency is "
             "send → component receipt, ack latency send → the `<a h/>` covering it; lost = sent − "
             "received − bounced after a 10 s drain. The load generator runs with GOMAXPROCS=LG_PROCS "
             "(parameters above) for every server. CPU per report: user + system time of the server "
             "processes (for xcollect-postgres and the cluster with their Postgres processes) and of "
             "the load generator, from the start of the run to the end of its drain, divided by the "
             "reports received; it does not depend on how the shared cores were split, so compare "
             "servers by it as well as by reports/s. xcollect's component enables XEP-0198 (rows "
             "deleted on ack); Prosody and ejabberd refuse XEP-0198 on component streams (plain XEP-0114).")
table("reports, acked workload: XEP-0198 with `<r/>` after every report", "reports-acked", REPORT_COLS,
      "reports_per_s", "higher",
      WORKLOADS + " Acked: each client enables XEP-0198 and asks for an ack after every report (the "
      "workload of a data-collection client). xcollect acks after the commit (durable), Prosody and "
      "ejabberd on receipt (in memory).", CPU_RATIO)
table("reports, streamed workload: no XEP-0198", "reports-streamed", REPORT_COLS,
      "reports_per_s", "higher",
      "The same clients without XEP-0198: no acks, only the window. xcollect still commits every "
      "report before delivering it.", CPU_RATIO)
table("reports at a steady rate, acked", "reports-rate-acked", REPORT_COLS,
      "p99_ms", "lower",
      "The acked clients sending at a fixed total rate (open loop, window 10 as a bound, one report per write).",
      CPU_RATIO)
table("reports at a steady rate, streamed", "reports-rate-streamed", REPORT_COLS,
      "p99_ms", "lower",
      "The streamed clients (no XEP-0198) at the same fixed total rate.", CPU_RATIO)
table("reports: throughput to a plain XEP-0114 component (xcollect, acked clients)", "reports-plain-component",
      REPORT_COLS, "reports_per_s", "higher",
      "The acked case with loadgen's component refusing XEP-0198 (`-component-sm off`), as "
      "slixmpp and xmpp.js processors do: the node follows each written batch with an XEP-0199 "
      "ping and deletes the rows when the answer comes. Compare with the acked table's xcollect rows.")
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
        xp = med("reports-acked", "xcollect-postgres", "reports_per_s")
        if xp:
            print(f"| xcollect-postgres delivered reports/s (acked workload) | {fmt(xp)} |\n")
            print(f"Ratio xcollect-postgres / pgbench ceiling = **{xp / statistics.median(tps):.2f}**.\n")
    else:
        print("pgbench failed (see bin/bench.log).\n")

copy = [r["result"]["rows_per_s"] for r in rows if r["case"] == "copy" and r["result"] and r["result"].get("rows_per_s")]
if any(r["case"] == "copy" for r in rows):
    print("### Postgres COPY ceiling\n")
    print("The same Postgres (fsync on), rows in groups as xcollect's group commit sends them: one "
          "session, 100 transactions of one COPY of 1,000 rows (~200-byte bytea) each.\n")
    if copy:
        c = statistics.median(copy)
        print(f"| | rows/s |\n|---|---|\n| COPY, 1,000 rows per transaction | {fmt(c)} ({fmt(min(copy))}–{fmt(max(copy))}) |")
        for case in ("reports-acked", "reports-streamed"):
            xp = med(case, PG, "reports_per_s")
            if xp:
                print(f"| {PG} delivered reports/s ({case}) | {fmt(xp)} |")
        print()
        for case in ("reports-acked", "reports-streamed"):
            xp = med(case, PG, "reports_per_s")
            if xp:
                print(f"Ratio {PG} ({case}) / COPY ceiling = **{xp / c:.2f}**.\n")
    else:
        print("COPY failed (see bin/bench.log).\n")

if any(r["case"].startswith("floor-") for r in rows):
    print("### The durable path's floor on this file system\n")
    print("`go test -run XXX -bench 'BenchmarkFdatasync4K|BenchmarkEnqueueSteady' -benchtime 1000x "
          "./storage/embedded/`, servers idle: one 4 KiB pwrite + fdatasync, and the embedded store "
          "alone at 2,000 reports/s (groups of 10 every 5 ms, claimed and deleted meanwhile), commit "
          "latency as the committer sees it. A report acknowledged after a commit cannot have a tail "
          "below the fdatasync tail; a bbolt commit does two.\n")
    print("| | p50 µs | p99 µs | max µs | runs |\n|---|---|---|---|---|")
    for case, name in [("floor-Fdatasync4K", "pwrite 4 KiB + fdatasync"),
                       ("floor-EnqueueSteady", "embedded Enqueue at 2,000 reports/s")]:
        if ran(case, "embedded-test"):
            n = len(vals(case, "embedded-test", "p99_us"))
            print(f"| {name} | {cell(case, 'embedded-test', 'p50_us')} | {cell(case, 'embedded-test', 'p99_us')} "
                  f"| {cell(case, 'embedded-test', 'max_us')} | {n} |")
    print()

if CL in servers or any(r["case"].startswith("converge") for r in rows):
    print("## Cluster\n")
if CL in servers:
    print("### 1 node vs 3 nodes on Postgres\n")
    print("The same load against one xcollect node on Postgres and against three nodes sharing one "
          "Postgres (clients spread over the three, processor on node 1), from the tables above; "
          "medians of the runs.\n")
    print(f"| case | figure | 1 node ({PG}) | 3 nodes ({CL}) | 3 nodes / 1 node |")
    print("|---|---|---|---|---|")
    for case, name in [("reports-acked", "reports, acked (as fast as the window allows)"),
                       ("reports-streamed", "reports, streamed (as fast as the window allows)"),
                       ("reports-rate-acked", "reports at a steady rate, acked")]:
        for key, label in [("reports_per_s", "delivered reports/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                           ("server_cpu_us_per_report", "server CPU µs/report (nodes + Postgres)"), ("lost", "lost")]:
            a, b = med(case, PG, key), med(case, CL, key)
            print(f"| {name} | {label} | {fmt(a)} | {fmt(b)} | {ratio(case, key, CL, PG)} |")
    print()
    if any(r["case"] == "reports-acked-resume" for r in rows):
        print("### Cost of the standby copies (XEP-0198 resumption after a node died)\n")
        print("The same 3-node load with clients that ask for resumption (`loadgen -client-sm resume`, "
              "as the reporter SDK does): their session state is copied to a standby node and each "
              "`<a h/>` waits until the copy has h. Runs interleaved with the ones above.\n")
        print("| case | figure | resume off | resume on | on / off |")
        print("|---|---|---|---|---|")
        for case, name in [("reports-acked", "reports, acked (as fast as the window allows)"),
                           ("reports-rate-acked", "reports at a steady rate, acked")]:
            for key, label in [("reports_per_s", "delivered reports/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                               ("ack_p50_ms", "ack p50 ms (send → <a h/>)"), ("ack_p99_ms", "ack p99 ms"), ("lost", "lost")]:
                a, b = med(case, CL, key), med(case + "-resume", CL, key)
                r = f"{b / a:.2f}" if a and b is not None else "–"
                print(f"| {name} | {label} | {fmt(a)} | {fmt(b)} | {r} |")
        print()
conv = [go_duration_ms(r["result"]["took"]) for r in rows if r["case"] == "converge" and r["result"]]
conv = [v for v in conv if v is not None]
cfail = sum(1 for r in rows if r["case"] == "converge" and not r["result"])
bench = [r["result"] for r in rows if r["case"] == "converge-bench" and r["result"]]
if conv or cfail or bench:
    print("### Directory convergence of a new node, 10,000 sessions\n")
    print("`go test -count=1 -run TestConverge10k -v ./cluster/`: three in-process nodes (real memberlist "
          "and node links on 127.0.0.1) hold 10,000 sessions, 3,333–3,334 each; a fourth node joins; the "
          "time is from its start until its directory holds all 10,000 (join, then one directory "
          "snapshot over the link from each node). Snapshot size: the bytes of one node's snapshot "
          "frame divided by its entries (JIDs are ~39 bytes).\n")
    print("| | median (min–max) | runs |\n|---|---|---|")
    if conv:
        print(f"| new node converged (ms) | {fmt(statistics.median(conv))} ({fmt(min(conv))}–{fmt(max(conv))}) | {len(conv)}"
              + (f", {cfail} failed" if cfail else "") + " |")
    else:
        print(f"| new node converged (ms) | failed | 0, {cfail} failed |")
    bpe = [r["result"]["snapshot_b_per_entry"] for r in rows if r["case"] == "converge" and r["result"]
           and r["result"].get("snapshot_b_per_entry") is not None]
    if bpe:
        print(f"| snapshot bytes per entry | {fmt(statistics.median(bpe))} ({fmt(min(bpe))}–{fmt(max(bpe))}) | {len(bpe)} |")
    print()
    if bench:
        b = bench[0]
        print("`go test -run XXX -bench BenchmarkConverge10k -benchtime 5x ./cluster/` (two seed nodes "
              "with 5,000 sessions each, five joins one after the other):\n")
        print("| ns/op | ms/op | snapshot-B/entry | B/op | allocs/op |\n|---|---|---|---|---|")
        print(f"| {fmt(b['ns_per_op'])} | {fmt(b['ns_per_op'] / 1e6)} | {fmt(b.get('snapshot_b_per_entry'))} "
              f"| {fmt(b.get('b_per_op'))} | {fmt(b.get('allocs_per_op'))} |\n")
    elif any(r["case"] == "converge-bench" for r in rows):
        print("BenchmarkConverge10k failed (see bin/bench.log).\n")

notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "BENCHMARKS-notes.md")
if os.path.exists(notes):
    print(open(notes).read().strip())
