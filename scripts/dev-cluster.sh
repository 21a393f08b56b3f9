#!/usr/bin/env bash
# Builds kvnode and runs a local cluster on 127.0.0.1:7070.. (data in ./dev-cluster/), in the
# foreground; Ctrl-C stops it. NODES (default 3) and K (default min(NODES, 3)) set its shape:
# NODES=7 K=3 makes 2 data groups and 1 spare. KVORUM_BIN_DIR=<dir> uses prebuilt binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes="${NODES:-3}"
k="${K:-$(( nodes < 3 ? nodes : 3 ))}"
if ! [[ "$nodes" =~ ^[0-9]+$ && "$k" =~ ^[0-9]+$ ]] || (( nodes < 1 || nodes > 64 || k < 1 || k > nodes )); then
  echo "dev-cluster: need 1 <= K <= NODES <= 64 (got NODES=$nodes K=$k)" >&2
  exit 2
fi
if [ -n "${KVORUM_BIN_DIR:-}" ]; then
  bin="$(cd "$KVORUM_BIN_DIR" && pwd)"   # prebuilt kvnode and kvctl
else
  # Prerequisites: installed here when run as root; as another user, a missing one stops this
  # at once with the one sudo command to run.
  if [ "$(id -u)" = 0 ]; then scripts/prereqs.sh --install; else scripts/prereqs.sh; fi
  # The dev profile (RocksDB itself optimized, see Cargo.toml) shares its compiled RocksDB with
  # scripts/test.sh; PROFILE=release builds optimized binaries (a second RocksDB build).
  profile="${PROFILE:-dev}"
  # The shipped binaries only: the workspace's default members leave out the test package, whose
  # `test-faults` feature would otherwise put the fault hooks in them. Third-party dependencies
  # resolve to the same features as in scripts/test.sh's build, so RocksDB is not compiled again.
  cargo build --profile "$profile" --bin kvnode --bin kvctl
  dir="$profile"; [ "$profile" = dev ] && dir=debug
  bin="$(cd "${CARGO_TARGET_DIR:-target}/$dir" && pwd)"
fi
ports=()
for ((i = 0; i < nodes; i++)); do ports+=($((7070 + i))); done
view="$(printf '127.0.0.1:%s,' "${ports[@]}")"
view="${view%,}"
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait; }
trap stop INT TERM EXIT
for port in "${ports[@]}"; do
  mkdir -p "dev-cluster/$port"
  ( cd "dev-cluster/$port" && K="$k" VIEW="$view" IPPORT="127.0.0.1:$port" exec "$bin/kvnode" ) \
    2> "dev-cluster/$port/kvnode.log" &
  pids+=($!)
done
echo "kvorum: $nodes nodes, K=$k, $((nodes / k)) data group(s) on $view"
echo "        logs in dev-cluster/*/kvnode.log; Ctrl-C to stop."
echo "try:    $bin/kvctl put hello world && $bin/kvctl get hello && $bin/kvctl status"
wait
