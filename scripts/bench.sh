#!/usr/bin/env bash
# make bench: xcollect (embedded store, Postgres, a 3-node cluster on one
# Postgres) side by side with Prosody and ejabberd (Debian packages) and the
# raw Postgres ceiling (pgbench), measured by clients/loadgen on this
# machine, plus the cluster directory's convergence time (go test). Writes
# BENCHMARKS.md; the handwritten notes come from
# clients/loadgen/BENCHMARKS-notes.md.
#
# Environment: RUNS (3), DUR (5s per timed run), CLIENTS (50), WINDOW (10),
# RATE (2000), IDLE_N (1000), LOGIN_WORKERS (16), PEERS (1: include
# Prosody and ejabberd), CLUSTER (1: include xcollect-cluster3), CONVERGE
# (1: the directory convergence tests), LG_PROCS (1: GOMAXPROCS of the load
# generator), OUT (BENCHMARKS.md).
#
# Fairness. The load generator shares the 2 cores with the server it
# measures, and its cost per report depends on the server: in the acked
# workload ejabberd answers every <r/> with its own <a/> (one read for the
# generator per report) where xcollect answers a group commit with one.
# Unbounded, the generator took ~2.7x more CPU per report against ejabberd
# than against xcollect and about as much as ejabberd itself, so the bench
# measured ejabberd on about one core. Hence: every server gets the same
# generator limited to LG_PROCS cores (GOMAXPROCS), clients write all the
# reports their window allows in one write (a buffered client), and every
# reports run records the CPU the server processes and the generator spent
# per report (/proc/PID/stat, getrusage): server CPU per report does not
# depend on how the cores were shared. Both workloads run for every server,
# labelled: "acked" (XEP-0198, <r/> after every report) and "streamed" (no
# XEP-0198: the client waits only for its window).
set -u
cd "$(dirname "$0")/.."
# Every server gets the same open-file limit: the hard one. Go raises its
# soft limit by itself; Erlang and Lua keep the soft 1024, and ejabberd's
# idle runs failed on it ("Failed TCP accept: too many open files" in its
# log, seen by the client as a stream header timeout).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ROOT=$PWD
RUNS=${RUNS:-3}
DUR=${DUR:-5s}
CLIENTS=${CLIENTS:-50}
WINDOW=${WINDOW:-10}
RATE=${RATE:-2000}
IDLE_N=${IDLE_N:-1000}
LOGIN_WORKERS=${LOGIN_WORKERS:-16}
LG_PROCS=${LG_PROCS:-1}
PEERS=${PEERS:-1}
CLUSTER=${CLUSTER:-1}
CONVERGE=${CONVERGE:-1}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
GO=${GO:-go}
W=$(mktemp -d /tmp/xcollect-bench.XXXXXX)
ADMIN_TOKEN=bench-admin-token-0123   # the nodes' http.admin_token, for /v1/status
chmod 755 "$W"
RES=$W/results.jsonl
LOG=$W/bench.log
: > "$RES"
PIDS=()
CPIDS=()
log() { echo "bench: $*" | tee -a "$LOG" >&2; }

cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	sleep 1
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	if [ -n "${EPMD_STARTED:-}" ]; then
		p=$(pgrep -x epmd) && kill "$p" 2>/dev/null
	fi
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_port HOST:PORT: bounded wait for a listener.
wait_port() {
	local hp=$1
	for _ in $(seq 1 150); do
		(exec 3<>"/dev/tcp/${hp%:*}/${hp#*:}") 2>/dev/null && return 0
		sleep 0.2
	done
	log "no listener on $hp"
	return 1
}

# port_busy HOST:PORT...: true (and logged) when one is already taken by
# another process, whose listener would otherwise pass for ours.
port_busy() {
	local hp busy=1
	for hp in "$@"; do
		if (exec 3<>"/dev/tcp/${hp%:*}/${hp#*:}") 2>/dev/null; then
			log "$hp is already in use by another process"
			busy=0
		fi
	done
	return $busy
}

log "building into $W"
$GO build -o "$W/xcollect" ./cmd/xcollect || exit 1
$GO build -o "$W/loadgen" ./clients/loadgen || exit 1
$GO build -o "$W/pgtmp" ./internal/pgtest/cmd/pgtmp || exit 1
LG=$W/loadgen
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
	-keyout "$W/cert.key" -out "$W/cert.crt" 2>/dev/null

SERVERS=()
declare -A C2S COMP PID

# --- xcollect, embedded store and Postgres --------------------------------
xc_config() { # name c2s comp
	mkdir -p "$W/$1"
	cat > "$W/$1/xcollect.yaml" <<EOF
domains: [localhost]
data_dir: $W/$1/data
log: {level: warn}
listeners: {c2s: "$2", c2s_tls: "", component: "$3", http: ""}
tls: {require: false}
limits: {max_connections_per_address: 100000}   # every load client comes from 127.0.0.1
components:
  - jid: collector.localhost
    secret: secret
    receive_presence: false
EOF
}
add_users_xc() { # name [dsn]
	local extra=()
	[ -n "${2:-}" ] && extra=(--postgres-dsn "$2")
	for i in $(seq 0 $((CLIENTS - 1))); do
		"$W/xcollect" user add "user$i@localhost" --password pass --config "$W/$1/xcollect.yaml" "${extra[@]}" >/dev/null 2>>"$LOG" || true
	done
}
start_xc() { # name c2s comp [dsn]
	port_busy "$2" "$3" && return 1
	local extra=()
	[ -n "${4:-}" ] && extra=(--postgres-dsn "$4")
	"$W/xcollect" serve --config "$W/$1/xcollect.yaml" "${extra[@]}" >"$W/$1/serve.log" 2>&1 &
	PID[$1]=$!
	PIDS+=($!)
	C2S[$1]=$2
	COMP[$1]=$3
	wait_port "$2" && wait_port "$3" && SERVERS+=("$1")
}
# Servers that run only the reports cases (no idle, login, offline).
declare -A REPORTS_ONLY

xc_config xcollect-embedded 127.0.0.1:15222 127.0.0.1:15347
add_users_xc xcollect-embedded
start_xc xcollect-embedded 127.0.0.1:15222 127.0.0.1:15347

DSN=""
"$W/pgtmp" -dir "$W/pg" -durable=true > "$W/pg.dsn" 2>>"$LOG" &
PGPID=$!
PIDS+=($PGPID)
for _ in $(seq 1 300); do test -s "$W/pg.dsn" && break; sleep 0.1; done
DSN=$(head -1 "$W/pg.dsn")
if [ -n "$DSN" ]; then
	log "postgres: $DSN (fsync on)"
	xc_config xcollect-postgres 127.0.0.1:16222 127.0.0.1:16347
	add_users_xc xcollect-postgres "$DSN"
	start_xc xcollect-postgres 127.0.0.1:16222 127.0.0.1:16347 "$DSN"
else
	log "pgtmp did not start: no Postgres figures"
fi

# --- xcollect-cluster3: 3 nodes on one Postgres ------------------------------
# Its own throw-away Postgres (fsync on), shared by three nodes on 127.0.0.1,
# 127.0.0.2 and 127.0.0.3, cluster keys as in deployments/local-cluster.sh.
# Clients are spread over the three c2s listeners (loadgen -c2s a,b,c:
# client i on node i mod 3); loadgen's component connects to node 1 only,
# so reports from clients on nodes 2 and 3 reach it through the shared
# queue. Steering is switched off (margin 1000): loadgen does not follow
# see-other-host. Reports cases only.
if [ "$CLUSTER" = 1 ]; then
	"$W/pgtmp" -dir "$W/pgc" -durable=true > "$W/pgc.dsn" 2>>"$LOG" &
	CPGPID=$!
	PIDS+=($!)
	for _ in $(seq 1 300); do test -s "$W/pgc.dsn" && break; sleep 0.1; done
	CDSN=$(head -1 "$W/pgc.dsn")
	if [ -n "$CDSN" ]; then
		log "cluster postgres: $CDSN (fsync on)"
		CKEY=$(head -c 32 /dev/urandom | base64)
		CN=xcollect-cluster3
		ADDRS=()
		for i in 1 2 3; do
			mkdir -p "$W/$CN/node$i"
			cat > "$W/$CN/node$i.yaml" <<EOF
node: {name: node$i}
domains: [localhost]
data_dir: $W/$CN/node$i
log: {level: warn}
listeners: {c2s: "127.0.0.$i:19222", c2s_tls: "", component: "127.0.0.$i:19347", http: "127.0.0.$i:19280"}
tls: {require: false}
limits: {max_connections_per_address: 100000}   # every load client comes from 127.0.0.x
storage: {postgres: {dsn: "$CDSN"}}
components:
  - {jid: collector.localhost, secret: secret, multiple_connections: true, receive_presence: false}
cluster:
  bind: "127.0.0.$i:19946"
  link: "127.0.0.$i:19947"
  join: ["127.0.0.1:19946"]
  key: "$CKEY"
  steering: {margin: 1000}
EOF
			ADDRS+=("127.0.0.$i:19222")
		done
		for i in $(seq 0 $((CLIENTS - 1))); do
			"$W/xcollect" user add "user$i@localhost" --password pass --config "$W/$CN/node1.yaml" >/dev/null 2>>"$LOG" || true
		done
		ok=1
		for i in 1 2 3; do
			port_busy "127.0.0.$i:19222" "127.0.0.$i:19347" "127.0.0.$i:19280" "127.0.0.$i:19946" "127.0.0.$i:19947" && ok=0
		done
		for i in 1 2 3; do
			[ "$ok" = 1 ] || break
			XCOLLECT_ADMIN_TOKEN="$ADMIN_TOKEN" "$W/xcollect" serve --config "$W/$CN/node$i.yaml" >"$W/$CN/node$i.log" 2>&1 &
			PIDS+=($!)
			CPIDS+=($!)
			wait_port "127.0.0.$i:19222" && wait_port "127.0.0.$i:19347" || ok=0
		done
		# Every node sees three members (bounded: 30 s).
		members=0
		for _ in $(seq 1 150); do
			[ "$ok" = 1 ] || break
			members=$(for i in 1 2 3; do curl -s --max-time 1 -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.$i:19280/v1/status" | tr -d '\n'; echo; done |
				python3 -c 'import json,sys; print(min(len(json.loads(l).get("members") or []) if l.strip() else 0 for l in sys.stdin.read().splitlines()[:3]))' 2>/dev/null)
			[ "${members:-0}" -ge 3 ] && break
			sleep 0.2
		done
		log "cluster: every node sees ${members:-0} members"
		if [ "$ok" = 1 ] && [ "${members:-0}" -ge 3 ]; then
			C2S[$CN]=$(IFS=,; echo "${ADDRS[*]}")
			COMP[$CN]=127.0.0.1:19347
			PID[$CN]=${CPIDS[0]}
			REPORTS_ONLY[$CN]=1
			SERVERS+=("$CN")
		else
			log "cluster did not form: no cluster figures"
			echo "xcollect-cluster3 did not form (members seen: ${members:-0}): $(tail -3 "$W/$CN"/node*.log 2>/dev/null)" >> "$W/peer-notes.txt"
		fi
	else
		log "pgtmp for the cluster did not start: no cluster figures"
	fi
fi

# --- peers ----------------------------------------------------------------
PEER_NOTES=$W/peer-notes.txt
touch "$PEER_NOTES"
if [ "$PEERS" = 1 ]; then
	if ! command -v prosody >/dev/null || ! command -v ejabberdctl >/dev/null; then
		log "installing prosody and ejabberd from Debian"
		DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y prosody ejabberd >>"$LOG" 2>&1 ||
			echo "apt-get install prosody ejabberd failed (see the bench log)" >> "$PEER_NOTES"
	fi
	# Prosody: foreground process as user prosody, config from clients/loadgen/peers.
	if command -v prosody >/dev/null; then
		P=$W/prosody
		mkdir -p "$P/data" "$P/certs"
		sed -e "s#@DIR@#$P#g; s#@C2S@#35222#; s#@COMP@#35347#" clients/loadgen/peers/prosody.cfg.lua > "$P/prosody.cfg.lua"
		cp "$W/cert.key" "$W/cert.crt" "$P/"
		chown -R prosody:prosody "$P"
		for i in $(seq 0 $((CLIENTS - 1))); do
			timeout 20 setpriv --reuid=prosody --regid=prosody --init-groups \
				prosodyctl --config "$P/prosody.cfg.lua" register "user$i" localhost pass >>"$LOG" 2>&1
		done
		setpriv --reuid=prosody --regid=prosody --init-groups prosody --config "$P/prosody.cfg.lua" -F >"$P/stdout.log" 2>&1 &
		PID[prosody]=$!
		PIDS+=($!)
		C2S[prosody]=127.0.0.1:35222
		COMP[prosody]=127.0.0.1:35347
		if wait_port 127.0.0.1:35222 && wait_port 127.0.0.1:35347; then SERVERS+=(prosody); else
			echo "prosody did not listen: $(tail -3 "$P/prosody.log" "$P/stdout.log" 2>/dev/null)" >> "$PEER_NOTES"
		fi
	fi
	# ejabberd: ejabberdctl foreground (runs beam as user ejabberd).
	if command -v ejabberdctl >/dev/null; then
		pgrep -x epmd >/dev/null || EPMD_STARTED=1
		E=$W/ejabberd
		mkdir -p "$E/spool" "$E/logs"
		sed -e "s#@DIR@#$E#g; s#@C2S@#25222#; s#@COMP@#25347#" clients/loadgen/peers/ejabberd.yml > "$E/ejabberd.yml"
		cp clients/loadgen/peers/ejabberdctl.cfg "$E/"
		cp /etc/ejabberd/inetrc "$E/" 2>/dev/null || true
		cat "$W/cert.key" "$W/cert.crt" > "$E/cert.pem"
		chown -R ejabberd:ejabberd "$E"
		EJ=(ejabberdctl --config-dir "$E" --spool "$E/spool" --logs "$E/logs" --node "lgbench@localhost")
		"${EJ[@]}" foreground >"$E/stdout.log" 2>&1 &
		PIDS+=($!)
		C2S[ejabberd]=127.0.0.1:25222
		COMP[ejabberd]=127.0.0.1:25347
		if wait_port 127.0.0.1:25222 && wait_port 127.0.0.1:25347; then
			PID[ejabberd]=$(pgrep -u ejabberd -f 'beam.smp.*lgbench' | head -1)
			PIDS+=("${PID[ejabberd]}")
			seq 0 $((CLIENTS - 1)) | timeout 300 xargs -P 4 -I{} "${EJ[@]}" register user{} localhost pass >>"$LOG" 2>&1
			SERVERS+=(ejabberd)
		else
			echo "ejabberd did not listen: $(tail -3 "$E/stdout.log")" >> "$PEER_NOTES"
		fi
	fi
fi
log "servers: ${SERVERS[*]}"

# descendants PID: PID and every process below it, one per line.
descendants() {
	echo "$1"
	local c
	for c in $(pgrep -P "$1"); do descendants "$c"; done
}

# server_pids SERVER: the processes whose CPU counts for SERVER, comma-
# separated: the node(s), and for the Postgres servers the Postgres
# processes alive now (backends that start and end inside a run are missed;
# pgx keeps its pool connections open, so after the first run there are
# none).
server_pids() {
	local p=()
	case "$1" in
	xcollect-postgres) p=("${PID[$1]}" $(descendants "$PGPID" | tail -n +2)) ;;
	xcollect-cluster3) p=("${CPIDS[@]}" $(descendants "$CPGPID" | tail -n +2)) ;;
	*) p=("${PID[$1]}") ;;
	esac
	(IFS=,; echo "${p[*]}")
}

# one CASE SERVER RUN ARGS...: a loadgen run, one JSON line into $RES.
one() {
	local case=$1 s=$2 r=$3
	shift 3
	local out
	out=$(GOMAXPROCS=$LG_PROCS timeout 120 "$LG" -label "$s" -c2s "${C2S[$s]}" -component-addr "${COMP[$s]}" -domain localhost \
		-component collector.localhost -secret secret -users "$CLIENTS" "$@" 2>>"$LOG")
	if [ -z "$out" ]; then
		log "$case $s run $r failed"
		out=null
	fi
	printf '{"case":"%s","server":"%s","run":%d,"result":%s}\n' "$case" "$s" "$r" "$out" >> "$RES"
}

# Idle sessions first, on servers that have seen no load yet: after a load
# run, memory the server frees (Go scavenger, BEAM, Lua GC) makes the RSS
# delta meaningless (the first committed run measured them last).
for r in $(seq 1 "$RUNS"); do
	for s in "${SERVERS[@]}"; do
		[ -n "${REPORTS_ONLY[$s]:-}" ] && continue
		one idle-plain "$s" "$r" -scenario idle -n "$IDLE_N" -server-pid "${PID[$s]}" -settle 3s
		one idle-tls "$s" "$r" -scenario idle -n "$IDLE_N" -server-pid "${PID[$s]}" -settle 3s -starttls
	done
done

# Cases, run round-robin over the servers so that every run of every
# server sees the same machine noise.
for r in $(seq 1 "$RUNS"); do
	for s in "${SERVERS[@]}"; do
		log "run $r: $s"
		sp=$(server_pids "$s")
		# The two workloads, with the same settings for every server:
		# acked = XEP-0198 with <r/> after every report (every server here
		# offers it), streamed = no XEP-0198.
		one reports-acked "$s" "$r" -scenario reports -n "$CLIENTS" -w "$WINDOW" -d "$DUR" -client-sm auto -r-every 1 -server-pid "$sp"
		one reports-streamed "$s" "$r" -scenario reports -n "$CLIENTS" -w "$WINDOW" -d "$DUR" -client-sm off -server-pid "$sp"
		one reports-rate-acked "$s" "$r" -scenario reports -n "$CLIENTS" -w "$WINDOW" -d "$DUR" -rate "$RATE" -client-sm auto -r-every 1 -server-pid "$sp"
		one reports-rate-streamed "$s" "$r" -scenario reports -n "$CLIENTS" -w "$WINDOW" -d "$DUR" -rate "$RATE" -client-sm off -server-pid "$sp"
		case "$s" in xcollect-embedded | xcollect-postgres)
			# The processor without XEP-0198 (slixmpp, xmpp.js): the node
			# pings after each batch and deletes rows on the answer.
			one reports-plain-component "$s" "$r" -scenario reports -n "$CLIENTS" -w "$WINDOW" -d "$DUR" -client-sm auto -component-sm off -server-pid "$sp"
		esac
		if [ "$s" = xcollect-cluster3 ]; then
			# Clients that ask for resumption (as the reporter SDK does): their
			# XEP-0198 state is copied to a standby node, acks wait for it.
			one reports-acked-resume "$s" "$r" -scenario reports -n "$CLIENTS" -w "$WINDOW" -d "$DUR" -client-sm resume -server-pid "$sp"
			one reports-rate-acked-resume "$s" "$r" -scenario reports -n "$CLIENTS" -w "$WINDOW" -d "$DUR" -rate "$RATE" -client-sm resume -server-pid "$sp"
		fi
		[ -n "${REPORTS_ONLY[$s]:-}" ] && continue
		one login-plain "$s" "$r" -scenario login -n "$LOGIN_WORKERS" -d "$DUR"
		one login-starttls "$s" "$r" -scenario login -n "$LOGIN_WORKERS" -d "$DUR" -starttls
		one offline "$s" "$r" -scenario offline -n 20 -count 10 -settle 2s -drain 10s
	done
done

# Raw Postgres ceiling: one-row INSERT per transaction at the same client
# count, fsync on, same server as xcollect-postgres (idle by now).
if [ -n "$DSN" ] && command -v pgbench >/dev/null; then
	psql "$DSN" -q -c "CREATE TABLE IF NOT EXISTS bench_ceiling (id bigserial PRIMARY KEY, sender text NOT NULL, stanza bytea NOT NULL, created timestamptz NOT NULL DEFAULT now())" >>"$LOG" 2>&1
	echo "INSERT INTO bench_ceiling (sender, stanza) VALUES ('user' || (random()*49)::int || '@localhost', convert_to(repeat('x', 200), 'UTF8'));" > "$W/insert.sql"
	for r in $(seq 1 "$RUNS"); do
		tps=$(pgbench -n -M prepared -c "$CLIENTS" -j 2 -T "${DUR%s}" -f "$W/insert.sql" "$DSN" 2>>"$LOG" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
		log "pgbench run $r: ${tps:-failed} tps"
		printf '{"case":"pgbench","server":"postgres","run":%d,"result":{"tps":%s}}\n' "$r" "${tps:-null}" >> "$RES"
	done
fi

# COPY ceiling: what this Postgres takes when rows come in groups, as
# xcollect's group commit sends them: one session, 100 transactions of one
# COPY of 1,000 rows (~200-byte bytea) each, fsync on.
if [ -n "$DSN" ] && command -v psql >/dev/null; then
	psql "$DSN" -q -c "CREATE TABLE IF NOT EXISTS bench_copy (id bigserial PRIMARY KEY, sender text NOT NULL, stanza bytea NOT NULL, created timestamptz NOT NULL DEFAULT now())" >>"$LOG" 2>&1
	python3 -c "
import random
with open('$W/copy1000.tsv', 'w') as f:
    for i in range(1000):
        f.write('user%d@localhost\t\\\\x%s\n' % (random.randrange($CLIENTS), '78' * 200))
"
	for _ in $(seq 1 100); do echo "\\copy bench_copy (sender, stanza) from '$W/copy1000.tsv'"; done > "$W/copy.sql"
	for r in $(seq 1 "$RUNS"); do
		t0=$(date +%s%N)
		if timeout 300 psql "$DSN" -q -v ON_ERROR_STOP=1 -f "$W/copy.sql" >>"$LOG" 2>&1; then
			t1=$(date +%s%N)
			rps=$((100000 * 1000000000 / (t1 - t0)))
		else
			rps=null
		fi
		log "COPY ceiling run $r: $rps rows/s"
		printf '{"case":"copy","server":"postgres","run":%d,"result":{"rows_per_s":%s}}\n' "$r" "$rps" >> "$RES"
	done
fi

# --- the durable path's floor on this file system (go test, servers idle) -----
# BenchmarkFdatasync4K: one 4 KiB pwrite + fdatasync; BenchmarkEnqueueSteady:
# the embedded store alone at 2,000 reports/s (groups of 10 every 5 ms,
# claimed and deleted meanwhile; the bench keeps the variant that deletes
# at once, as the delivery loop does). p50/p99/max in µs: a report acked after
# a commit cannot have a tail below the fdatasync tail.
for r in $(seq 1 "$RUNS"); do
	out=$(timeout 300 $GO test -count=1 -run XXX -bench 'BenchmarkFdatasync4K|BenchmarkEnqueueSteady' -benchtime 1000x ./storage/embedded/ 2>&1)
	echo "$out" >> "$LOG"
	for b in Fdatasync4K EnqueueSteady; do
		name=$b
		[ "$b" = EnqueueSteady ] && name='EnqueueSteady/delete-every=0s' # deletes as component/deliver.go does them
		line=$(echo "$out" | grep "^Benchmark$name" | head -1 | tr -s ' \t' ' ')
		m() { echo "$line" | sed -n "s/.* \([0-9.]*\) $1\( .*\)\{0,1\}\$/\1/p"; }
		p50=$(m 'p50-µs')
		p99=$(m 'p99-µs')
		mx=$(m 'max-µs')
		log "store floor run $r: $b p50 ${p50:-?} p99 ${p99:-?} max ${mx:-?} µs"
		if [ -n "$p99" ]; then
			res="{\"p50_us\":${p50:-null},\"p99_us\":$p99,\"max_us\":${mx:-null}}"
		else
			res=null
		fi
		printf '{"case":"floor-%s","server":"embedded-test","run":%d,"result":%s}\n' "$b" "$r" "$res" >> "$RES"
	done
done

# --- cluster directory convergence (go test, servers idle) ------------------
# TestConverge10k: 3 in-process nodes hold 10,000 sessions, a fourth joins;
# the time until its directory holds all 10,000 (join + link snapshots).
# BenchmarkConverge10k: the same with 2 seed nodes, 5 joins.
if [ "$CONVERGE" = 1 ]; then
	for r in $(seq 1 "$RUNS"); do
		out=$(timeout 300 $GO test -count=1 -run 'TestConverge10k' -v ./cluster/ 2>&1)
		echo "$out" >> "$LOG"
		took=$(echo "$out" | sed -n 's/.*new node converged to [0-9]* sessions in \([^ ]*\).*/\1/p' | head -1)
		bpe=$(echo "$out" | sed -n 's/.* = \([0-9.]*\) B\/entry.*/\1/p' | head -1)
		log "converge run $r: ${took:-failed}, ${bpe:-?} B/entry"
		if [ -n "$took" ]; then
			res="{\"took\":\"$took\",\"snapshot_b_per_entry\":${bpe:-null}}"
		else
			res=null
		fi
		printf '{"case":"converge","server":"cluster-test","run":%d,"result":%s}\n' "$r" "$res" >> "$RES"
	done
	out=$(timeout 300 $GO test -run XXX -bench BenchmarkConverge10k -benchtime 5x ./cluster/ 2>&1)
	echo "$out" >> "$LOG"
	line=$(echo "$out" | grep '^BenchmarkConverge10k' | head -1 | tr -s ' \t' ' ')
	metric() { echo "$line" | sed -n "s/.* \([0-9.]*\) $1\( .*\)\{0,1\}\$/\1/p"; }
	nsop=$(metric 'ns\/op')
	bpe=$(metric 'snapshot-B\/entry')
	bop=$(metric 'B\/op')
	aop=$(metric 'allocs\/op')
	log "BenchmarkConverge10k: ${line:-failed}"
	if [ -n "$nsop" ]; then
		res="{\"ns_per_op\":$nsop,\"snapshot_b_per_entry\":${bpe:-null},\"b_per_op\":${bop:-null},\"allocs_per_op\":${aop:-null},\"line\":\"$line\"}"
	else
		res=null
	fi
	printf '{"case":"converge-bench","server":"cluster-test","run":1,"result":%s}\n' "$res" >> "$RES"
fi

# --- machine and versions ---------------------------------------------------
{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "nproc: $(nproc)"
	echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
	echo "kernel: $(uname -r)"
	echo "go: $($GO version)"
	echo "xcollect: $(git rev-parse --short HEAD)"
	command -v prosody >/dev/null && echo "prosody: $(dpkg-query -W -f '${Version}' prosody 2>/dev/null)"
	command -v ejabberdctl >/dev/null && echo "ejabberd: $(dpkg-query -W -f '${Version}' ejabberd 2>/dev/null)"
	command -v pgbench >/dev/null && echo "postgres: $(pgbench --version)"
} > "$W/machine.txt"

python3 "$ROOT/clients/loadgen/bench_report.py" "$RES" "$W/machine.txt" "$PEER_NOTES" \
	"RUNS=$RUNS DUR=$DUR CLIENTS=$CLIENTS WINDOW=$WINDOW RATE=$RATE IDLE_N=$IDLE_N LOGIN_WORKERS=$LOGIN_WORKERS PEERS=$PEERS CLUSTER=$CLUSTER CONVERGE=$CONVERGE LG_PROCS=$LG_PROCS" > "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
# Everything the report is made from stays in bin/, so that it can be
# rewritten (after editing clients/loadgen/BENCHMARKS-notes.md) without a
# new run: python3 clients/loadgen/bench_report.py bin/bench-results.jsonl
# bin/bench-machine.txt bin/bench-peer-notes.txt "$(cat bin/bench-params.txt)"
mkdir -p bin && cp "$RES" bin/bench-results.jsonl && cp "$LOG" bin/bench.log &&
	cp "$W/machine.txt" bin/bench-machine.txt && cp "$PEER_NOTES" bin/bench-peer-notes.txt
echo "RUNS=$RUNS DUR=$DUR CLIENTS=$CLIENTS WINDOW=$WINDOW RATE=$RATE IDLE_N=$IDLE_N LOGIN_WORKERS=$LOGIN_WORKERS PEERS=$PEERS CLUSTER=$CLUSTER CONVERGE=$CONVERGE LG_PROCS=$LG_PROCS" > bin/bench-params.txt
log "wrote $OUT (raw results: bin/bench-results.jsonl)"
