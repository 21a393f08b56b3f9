#!/usr/bin/env bash
# Benchmarks kvorum on 127.0.0.1 with kvctl bench: put and get at 1 and 64 clients, the disk's
# fsync latency beside them, and — when the `etcd` binary is installed (Debian: etcd-server) —
# the same load against a 3-member etcd cluster on the same machine.
#
# usage: scripts/bench.sh [BIN_DIR] [SECONDS]
#   BIN_DIR  directory holding kvnode and kvctl (default: $CARGO_TARGET_DIR/release or target/release)
#   SECONDS  duration of each run (default 10)
# environment: NODES (default 3) and K (default 3) shape the kvorum cluster; NO_ETCD=1 skips etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/release}"
secs="${2:-10}"
nodes="${NODES:-3}"
k="${K:-3}"
# The shipped kvnode, never the test suite's kvnode-test (it carries the planted faults).
kvnode="$bin/kvnode"
kvctl="$bin/kvctl"
[ -x "$kvnode" ] && [ -x "$kvctl" ] || { echo "bench: no kvnode/kvctl in $bin; build with: cargo build --release --bin kvnode --bin kvctl" >&2; exit 1; }
dir="$(mktemp -d /tmp/kvorum-bench.XXXXXX)"
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
cleanup() { stop_all; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

ports=()
for ((i = 0; i < nodes; i++)); do ports+=($((7170 + i))); done
view="$(printf '127.0.0.1:%s,' "${ports[@]}")"; view="${view%,}"
for p in "${ports[@]}"; do
  K="$k" VIEW="$view" IPPORT="127.0.0.1:$p" KVORUM_DATA_DIR="$dir/$p" KVORUM_CLUSTER_SECRET=bench \
    "$kvnode" 2> "$dir/$p.log" &
  pids+=($!)
done
export KVORUM_ENDPOINTS="$view"
"$kvctl" --timeout-ms 30000 put bench-warmup x >/dev/null
echo "kvnode: $kvnode ($nodes nodes, K=$k)"
python3 scripts/fsync-latency.py "$dir" 1000
for op in put get; do
  for c in 1 64; do
    "$kvctl" bench --op "$op" --clients "$c" --duration-secs "$secs" --keys 1000 --value-bytes 100
  done
done
stop_all

if [ "${NO_ETCD:-}" = 1 ]; then exit 0; fi
if ! command -v etcd >/dev/null; then
  echo "etcd: not installed (Debian/Ubuntu: apt-get install etcd-server); comparison skipped"
  exit 0
fi
cluster="e1=http://127.0.0.1:2380,e2=http://127.0.0.1:2382,e3=http://127.0.0.1:2384"
for i in 1 2 3; do
  client=$((2377 + 2 * i)); peer=$((client + 1))
  etcd --name "e$i" --data-dir "$dir/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token kvorum-bench \
    2> "$dir/etcd$i.log" &
  pids+=($!)
done
# Wait (bounded) until the etcd cluster answers a write.
for _ in $(seq 1 100); do
  curl -sf -X POST http://127.0.0.1:2379/v3/kv/put -d '{"key":"d2FybXVw","value":"eA=="}' >/dev/null && break
  sleep 0.1
done
# Send the load to etcd's leader, as kvctl's smart routing does for kvorum.
leader=127.0.0.1:2379
for client in 2379 2381 2383; do
  if curl -sf -X POST "http://127.0.0.1:$client/v3/maintenance/status" -d '{}' |
    python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d.get("leader") == d["header"]["member_id"] else 1)'; then
    leader="127.0.0.1:$client"
  fi
done
echo "etcd: $(etcd --version | head -1) (3 members, leader at $leader)"
for op in put get; do
  for c in 1 64; do
    "$kvctl" --endpoints "$leader" bench --target etcd --op "$op" --clients "$c" \
      --duration-secs "$secs" --keys 1000 --value-bytes 100
  done
done
