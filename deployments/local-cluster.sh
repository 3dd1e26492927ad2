#!/usr/bin/env bash
# local-cluster.sh starts a 3-node xcollect cluster on this machine: a
# throw-away Postgres (kept in ./data/cluster/pg) and nodes on 127.0.0.1,
# 127.0.0.2 and 127.0.0.3 (all on the loopback interface), each with its own
# config in ./data/cluster/nodeN.yaml. Ctrl-C stops everything.
#
#   make build && deployments/local-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dir=./data/cluster
mkdir -p "$dir"
go build -o bin/xcollect ./cmd/xcollect
go build -o bin/pgtmp ./internal/pgtest/cmd/pgtmp

pids=() pg=
# Stop the nodes first and wait for them, then Postgres: a node that loses
# its database while shutting down logs errors that mean nothing. Postgres
# runs in its own session (setsid) so that Ctrl-C, which the terminal sends
# to every process of the foreground group, reaches only the nodes.
cleanup() {
	trap - EXIT INT TERM
	kill "${pids[@]}" 2>/dev/null || true
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	[ -z "$pg" ] || { kill "$pg" 2>/dev/null || true; wait "$pg" 2>/dev/null || true; }
}
trap cleanup EXIT INT TERM

setsid bin/pgtmp -dir "$dir/pg" > "$dir/pg.dsn" 2> "$dir/pg.log" & pg=$!
for _ in $(seq 1 100); do [ -s "$dir/pg.dsn" ] && break; sleep 0.1; done
dsn=$(cat "$dir/pg.dsn")
# A cluster does not start without a key (the same on every node); every
# node listens for gossip and links on its own address only.
key=$(head -c 32 /dev/urandom | base64)
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')   # http.admin_token for /v1/status

for i in 1 2 3; do
	cat > "$dir/node$i.yaml" <<YAML
node: {name: node$i}
domains: [localhost]
data_dir: $dir/node$i
listeners: {c2s: "127.0.0.$i:5222", c2s_tls: "127.0.0.$i:5223", component: "127.0.0.$i:5347", http: "127.0.0.$i:5280"}
http: {admin_token: "$token"}
storage: {postgres: {dsn: "$dsn"}}
components:
  - {jid: collector.localhost, secret: collector-secret, multiple_connections: true, receive_presence: true}
cluster:
  bind: "127.0.0.$i:7946"
  join: ["127.0.0.1:7946"]
  key: "$key"
YAML
done
bin/xcollect user add demo@localhost --password demo --config "$dir/node1.yaml" 2>/dev/null || true
for i in 1 2 3; do
	bin/xcollect serve --config "$dir/node$i.yaml" 2> "$dir/node$i.log" & pids+=($!)
done
cat <<MSG
3 nodes on 127.0.0.1, 127.0.0.2, 127.0.0.3 (c2s 5222, TLS 5223, components 5347, HTTP 5280), Postgres $dsn
  log in as demo@localhost / demo on any node; users: bin/xcollect user add U@localhost --config $dir/node1.yaml
  best node for a new client:  curl http://127.0.0.1:5280/v1/connect
  cluster view:                curl -H "Authorization: Bearer $token" http://127.0.0.1:5280/v1/status
  logs: $dir/node{1,2,3}.log — Ctrl-C stops the cluster
MSG
wait
