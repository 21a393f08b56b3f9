#!/usr/bin/env bash
# Benchmarks a 3-node cluster on 127.0.0.1 with kvctl bench: put and get at 1 and 64 clients,
# and the disk's fsync latency beside them.
#
# usage: scripts/bench.sh [BIN_DIR] [SECONDS]
#   BIN_DIR  directory holding kvnode and kvctl (default: $CARGO_TARGET_DIR/release or target/release)
#   SECONDS  duration of each run (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/release}"
secs="${2:-10}"
kvnode="$bin/kvnode"; [ -x "$kvnode" ] || kvnode="$bin/kvnode-test"
kvctl="$bin/kvctl"
[ -x "$kvnode" ] && [ -x "$kvctl" ] || { echo "bench: no kvnode/kvctl in $bin; build with: cargo build --release --bins" >&2; exit 1; }
dir="$(mktemp -d /tmp/kvorum-bench.XXXXXX)"
ports=(7170 7171 7172)
view="127.0.0.1:7170,127.0.0.1:7171,127.0.0.1:7172"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM
for p in "${ports[@]}"; do
  K=3 VIEW="$view" IPPORT="127.0.0.1:$p" KVORUM_DATA_DIR="$dir/$p" KVORUM_CLUSTER_SECRET=bench \
    "$kvnode" 2> "$dir/$p.log" &
  pids+=($!)
done
export KVORUM_ENDPOINTS="$view"
"$kvctl" --timeout-ms 30000 put bench-warmup x >/dev/null
echo "kvnode: $kvnode"
python3 scripts/fsync-latency.py "$dir" 1000
for op in put get; do
  for c in 1 64; do
    "$kvctl" bench --op "$op" --clients "$c" --duration-secs "$secs" --keys 1000 --value-bytes 100
  done
done
