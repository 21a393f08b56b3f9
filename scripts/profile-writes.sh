#!/usr/bin/env bash
# Profiles kvorum's write path (issue 21, "Find it"): a 3-node K=3 cluster of release binaries on
# 127.0.0.1, `kvctl bench --op put --clients 64` against it, and meanwhile on the data group's
# leader and on one follower:
#   - where the CPU goes: `perf record -g` on the leader, summarized by `perf report` (top
#     symbols, children included);
#   - the fsync calls: `strace -f -c` counts of fdatasync/fsync/pwrite/write per node, in a
#     second run of 10 s (a tracer slows the node: that run's throughput is lower);
#   - the threads' CPU time (`/proc/PID/task/*/stat`, utime+stime per thread name) over the run.
# Everything is written to a folder it prints (bench output, reports, node logs).
#
# usage: scripts/profile-writes.sh [BIN_DIR] [SECONDS]
#   BIN_DIR  directory holding kvnode and kvctl (default: $CARGO_TARGET_DIR/release or
#            target/release); build with `cargo build --release --bin kvnode --bin kvctl`
#   SECONDS  length of the profiled run (default 20)
# needs: perf (Debian: linux-perf), strace.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/release}"
secs="${2:-20}"
kvnode="$bin/kvnode"
kvctl="$bin/kvctl"
[ -x "$kvnode" ] && [ -x "$kvctl" ] || { echo "profile: no kvnode/kvctl in $bin; build with: cargo build --release --bin kvnode --bin kvctl" >&2; exit 1; }
for tool in perf strace python3; do
  command -v "$tool" >/dev/null || { echo "profile: $tool is missing (Debian: linux-perf, strace, python3)" >&2; exit 1; }
done
dir="$(mktemp -d /tmp/kvorum-profile.XXXXXX)"
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap stop_all EXIT INT TERM

ports=(7270 7271 7272)
view="$(printf '127.0.0.1:%s,' "${ports[@]}")"; view="${view%,}"
for p in "${ports[@]}"; do
  K=3 VIEW="$view" IPPORT="127.0.0.1:$p" KVORUM_DATA_DIR="$dir/$p" KVORUM_CLUSTER_SECRET=profile \
    "$kvnode" 2> "$dir/$p.log" &
  pids+=($!)
done
export KVORUM_ENDPOINTS="$view"
# The first write may meet the first elections (an unknown outcome): try again, 30 s at most.
for try in $(seq 30); do
  "$kvctl" --timeout-ms 30000 put profile-warmup x >/dev/null 2>&1 && break
  [ "$try" = 30 ] && { echo "profile: the cluster took no write in 30 tries; logs in $dir" >&2; exit 1; }
  sleep 1
done
# A short unprofiled warm-up, then the leader of data group 1 from the status.
"$kvctl" bench --op put --clients 64 --duration-secs 3 --keys 1000 --value-bytes 100 >/dev/null
leader_id="$("$kvctl" --json status | python3 -c 'import json,sys; s=json.load(sys.stdin); print([g["leader"] for g in s["groups"] if g["id"]==1][0])')"
leader_pid="${pids[$((leader_id - 1))]}"
follower_id=$(( leader_id % 3 + 1 ))
follower_pid="${pids[$((follower_id - 1))]}"
echo "profile: leader node $leader_id (pid $leader_pid), follower node $follower_id (pid $follower_pid); folder $dir"

threads() { # PID: "name ticks" per thread, summed by name
  for t in /proc/"$1"/task/*; do
    awk '{ n=$2; for (i=3; $i !~ /^[RSDZTtWXxKPI]$/; i++) n=n" "$i; print n, $(i+12)+$(i+13) }' "$t/stat" 2>/dev/null || true
  done | python3 -c '
import sys, collections
c = collections.Counter()
for line in sys.stdin:
    name, ticks = line.rsplit(" ", 1)
    c[name.strip("()")] += int(ticks)
for name, t in sorted(c.items()):
    print(name, t)'
}
# Phase 1: CPU (perf samples the leader; threads' CPU time on both), no tracer attached.
threads "$leader_pid" > "$dir/leader-threads-before.txt"
threads "$follower_pid" > "$dir/follower-threads-before.txt"
perf record -F 499 -g -p "$leader_pid" -o "$dir/perf.data" -- sleep "$secs" 2> "$dir/perf-record.log" &
p1=$!
"$kvctl" bench --op put --clients 64 --duration-secs "$secs" --keys 1000 --value-bytes 100 | tee "$dir/bench.txt"
wait "$p1" || true
threads "$leader_pid" > "$dir/leader-threads-after.txt"
threads "$follower_pid" > "$dir/follower-threads-after.txt"
# Phase 2: syscall counts (strace slows every traced thread: its run's throughput is lower).
strace -f -c -e trace=fdatasync,fsync,pwrite64,write,writev -p "$leader_pid" -o "$dir/leader-strace.txt" 2>/dev/null &
s1=$!
strace -f -c -e trace=fdatasync,fsync,pwrite64,write,writev -p "$follower_pid" -o "$dir/follower-strace.txt" 2>/dev/null &
s2=$!
sleep 1
"$kvctl" bench --op put --clients 64 --duration-secs 10 --keys 1000 --value-bytes 100 | tee "$dir/bench-strace.txt"
kill -INT "$s1" "$s2" 2>/dev/null || true
wait "$s1" "$s2" 2>/dev/null || true
stop_all

hz="$(getconf CLK_TCK)"
for who in leader follower; do
  echo "== $who: CPU seconds per thread name over the run"
  python3 - "$dir/$who-threads-before.txt" "$dir/$who-threads-after.txt" "$hz" "$secs" <<'EOF'
import sys
def load(p):
    d = {}
    for line in open(p):
        name, t = line.rsplit(" ", 1)
        d[name] = int(t)
    return d
before, after, hz, secs = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rows = sorted(((after[n] - before.get(n, 0)) / hz, n) for n in after)
for cpu, name in reversed(rows):
    if cpu > 0:
        print(f"  {name:24} {cpu:7.2f} s  ({cpu / secs:.2f} core)")
EOF
  echo "== $who: syscalls (strace -c)"
  grep -E 'fdatasync|fsync|pwrite64|writev|write|total' "$dir/$who-strace.txt" || true
done
echo "== leader: perf report (children, top 40)"
perf report -i "$dir/perf.data" --children --stdio --percent-limit 2 > "$dir/perf-report.txt" 2>/dev/null || true
grep -E '^ +[0-9]' "$dir/perf-report.txt" | sed -n 1,40p | tee "$dir/perf-top.txt"
echo "profile: everything is in $dir"
