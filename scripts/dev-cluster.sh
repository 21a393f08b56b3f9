#!/usr/bin/env bash
# Builds kvnode and runs a 3-node cluster on 127.0.0.1:7070-7072 (data in ./dev-cluster/),
# in the foreground; Ctrl-C stops it. KVORUM_BIN_DIR=<dir> uses prebuilt binaries instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${KVORUM_BIN_DIR:-}" ]; then
  bin="$(cd "$KVORUM_BIN_DIR" && pwd)"   # prebuilt kvnode and kvctl
else
  scripts/prereqs.sh
  cargo build --release --bins
  bin="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)"
fi
view="127.0.0.1:7070,127.0.0.1:7071,127.0.0.1:7072"
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait; }
trap stop INT TERM EXIT
for port in 7070 7071 7072; do
  mkdir -p "dev-cluster/$port"
  ( cd "dev-cluster/$port" && K=3 VIEW="$view" IPPORT="127.0.0.1:$port" exec "$bin/kvnode" ) \
    2> "dev-cluster/$port/kvnode.log" &
  pids+=($!)
done
echo "kvorum: 3 nodes on $view (logs in dev-cluster/*/kvnode.log). Ctrl-C to stop."
echo "try:    $bin/kvctl --endpoints $view put hello world && $bin/kvctl get hello"
wait
