#!/usr/bin/env bash
# The failover bench (issue 20): SIGKILL the leader of a three-node cluster under a load of 4
# writers of plain HTTP puts, and time from the kill to the first acknowledged write invoked
# after it; kvorum (its data group's leader, or its metadata leader) and etcd by the same method.
# See docs/benchmarks.md, "Failover".
#
# usage: scripts/failover-bench.sh [MODE...] [-- FLAGS...]
#   MODE   data-leader, metadata-leader, etcd, or all (the three in turn; the default)
#   FLAGS  passed to every run of failover-bench: --kills N (default 10), --steady-secs S,
#          --seed N, --request-timeout-ms, --retry-pause-ms (see failover-bench --help); or, instead
#          of kills, a soak: --soak-secs S [--sample-secs N] [--neighbour] runs the load S seconds
#          without a fault (beside a disk-heavy neighbour) and reports elections and memory
# e.g.     scripts/failover-bench.sh data-leader -- --kills 3
#          scripts/failover-bench.sh data-leader -- --soak-secs 1800 --writers 64 --neighbour \
#            --request-timeout-ms 5000
#
# Builds the dev profile (failover-bench, then kvnode the README's way), copies both out of the
# target directory (a later build that shares it may replace them meanwhile), then runs each
# mode. Each run prints its folder (node logs, summary.json or soak.json) and a FAILOVER-BENCH
# or SOAK line. etcd: the Debian/Ubuntu package etcd-server.
set -euo pipefail
cd "$(dirname "$0")/.."

modes=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    all) modes+=(data-leader metadata-leader etcd) ;;
    data-leader | metadata-leader | etcd) modes+=("$1") ;;
    *) echo "failover-bench: unknown mode '$1' (data-leader, metadata-leader, etcd, all)" >&2; exit 2 ;;
  esac
  shift
done
[ $# -gt 0 ] && shift # the "--"
[ ${#modes[@]} -gt 0 ] || modes=(data-leader metadata-leader etcd)

if [[ " ${modes[*]} " == *" etcd "* ]] && ! command -v etcd >/dev/null; then
  echo "failover-bench: etcd is not installed (Debian/Ubuntu: apt-get install etcd-server)" >&2
  exit 1
fi

# The programs where cargo put them (wherever the target directory is configured to be), each
# copied out before the next build: the bench from the test package, then kvnode built the
# README's way (`cargo build --bin kvnode`: the workspace's default members, so without the test
# package's fault hooks), the binary users run.
bin="$(mktemp -d /tmp/kvorum-failover-bin.XXXXXX)"
trap 'rm -rf "$bin"' EXIT
built_exe() { # NAME CARGO-ARGS...: builds, prints the path of the executable NAME
  local name="$1" out
  shift
  out="$(cargo build "$@" --message-format=json-render-diagnostics |
    grep -o '"executable":"[^"]*"' | cut -d'"' -f4)"
  grep "/$name\$" <<<"$out" || { echo "failover-bench: cargo built no $name" >&2; exit 1; }
}
cp "$(built_exe failover-bench -p kvorum-tests --bin failover-bench)" "$bin/"
cp "$(built_exe kvnode --bin kvnode)" "$bin/"

for mode in "${modes[@]}"; do
  case "$mode" in
    etcd) "$bin/failover-bench" --target etcd "$@" ;;
    *) "$bin/failover-bench" --target kvorum --kill "$mode" --kvnode "$bin/kvnode" "$@" ;;
  esac
done
