#!/usr/bin/env bash
# Soak: runs the Jepsen suite's mixed run (kill, pause, partition, kill-all; needs root and
# nftables) again and again for MINUTES minutes, then prints the totals: runs, nemesis-minutes
# (the measured fault periods), operations, violations, lost acknowledged writes.
#
#   scripts/soak.sh MINUTES [TEST]     TEST defaults to jepsen_mixed_is_linearizable
#
# Each run is the suite's short run (about 30 s, new seed each time). A run with KVORUM_JEPSEN_LONG=1
# lasts 5 minutes instead; it is passed through. Every run's output goes to
# $SOAK_DIR (default: a fresh temp dir), one log per run; a failing run's artifacts stay in the
# folder the run prints. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:?usage: scripts/soak.sh MINUTES [TEST]}
test_name=${2:-jepsen_mixed_is_linearizable}
case $minutes in ''|*[!0-9]*) echo "MINUTES must be a whole number" >&2; exit 2;; esac
dir=${SOAK_DIR:-$(mktemp -d /tmp/kvorum-soak.XXXXXX)}
mkdir -p "$dir"

echo "soak: building the Jepsen tests" >&2
cargo test --workspace --test jepsen --no-run >"$dir/build.log" 2>&1 || {
    echo "soak: build failed, see $dir/build.log" >&2
    exit 1
}

end=$(( $(date +%s) + minutes * 60 ))
runs=0 failed=0 ops=0 ok_ops=0 faults=0 fault_secs=0 lost=0 violations=0 unknown=0 installs=0
while [ "$(date +%s)" -lt "$end" ]; do
    runs=$((runs + 1))
    log="$dir/run-$runs.log"
    echo "soak: run $runs ($test_name), log $log" >&2
    if ! cargo test --workspace --test jepsen -- --exact "$test_name" --nocapture >"$log" 2>&1; then
        failed=$((failed + 1))
        echo "soak: run $runs FAILED (see $log)" >&2
    fi
    # The harness prints one line per run: "jepsen-summary name=… ops=N ok_reads=R
    # ok_writes=W faults=F fault_secs=S lost_acks=L … snapshots_installed=I verdict=V".
    while read -r line; do
        get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
        ops=$((ops + $(get ops)))
        ok_ops=$((ok_ops + $(get ok_reads) + $(get ok_writes)))
        faults=$((faults + $(get faults)))
        fault_secs=$(awk -v a="$fault_secs" -v b="$(get fault_secs)" 'BEGIN { print a + b }')
        lost=$((lost + $(get lost_acks)))
        installs=$((installs + $(get snapshots_installed)))
        case $(get verdict) in
            NotLinearizable*) violations=$((violations + 1));;
            Unknown*) unknown=$((unknown + 1));;
        esac
    done < <(grep '^jepsen-summary ' "$log" || true)
done

nemesis_minutes=$(awk -v s="$fault_secs" 'BEGIN { printf "%.1f", s / 60 }')
echo
echo "soak summary ($test_name, $minutes min, logs in $dir)"
echo "  runs:             $runs ($failed failed)"
echo "  nemesis-minutes:  $nemesis_minutes ($faults faults, measured from each fault's start to its heal)"
echo "  operations:       $ops invoked, $ok_ops completed ok"
echo "  violations:       $violations (runs not linearizable; $unknown unknown)"
echo "  lost acks:        $lost (acknowledged put/cas/append no final read shows, nothing could overwrite)"
echo "  snapshot installs: $installs"
[ "$failed" -eq 0 ]
