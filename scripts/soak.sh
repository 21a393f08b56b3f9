#!/usr/bin/env bash
# Soak: runs the Jepsen suite's mixed run (kill, pause, and partition when nftables and root are
# there) again and again for MINUTES minutes, then prints the totals: runs, nemesis-minutes,
# operations, violations, lost acknowledged writes.
#
#   scripts/soak.sh MINUTES [TEST]     TEST defaults to jepsen_mixed_is_linearizable
#
# Each run is the suite's short run (20 s, new seed each time). A run with KVORUM_JEPSEN_LONG=1
# lasts 5 minutes instead; it is passed through. Every run's output goes to
# $SOAK_DIR (default: a fresh temp dir), one log per run; a failing run's artifacts stay in the
# folder the run prints. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:?usage: scripts/soak.sh MINUTES [TEST]}
test_name=${2:-jepsen_mixed_is_linearizable}
case $minutes in ''|*[!0-9]*) echo "MINUTES must be a whole number" >&2; exit 2;; esac
# Length of one fault, in seconds: the harness's fault_period (JepsenOptions::short).
fault_secs=${SOAK_FAULT_SECS:-3}
dir=${SOAK_DIR:-$(mktemp -d /tmp/kvorum-soak.XXXXXX)}
mkdir -p "$dir"

echo "soak: building the Jepsen tests" >&2
cargo test --workspace --test jepsen --no-run >"$dir/build.log" 2>&1 || {
    echo "soak: build failed, see $dir/build.log" >&2
    exit 1
}

end=$(( $(date +%s) + minutes * 60 ))
runs=0 failed=0 ops=0 faults=0 violations=0 unknown=0
while [ "$(date +%s)" -lt "$end" ]; do
    runs=$((runs + 1))
    log="$dir/run-$runs.log"
    echo "soak: run $runs ($test_name), log $log" >&2
    if ! cargo test --workspace --test jepsen -- --exact "$test_name" --nocapture >"$log" 2>&1; then
        failed=$((failed + 1))
        echo "soak: run $runs FAILED (see $log)" >&2
    fi
    # The harness prints: "jepsen NAME: N operations, F faults, verdict V (report path)".
    while read -r n f v; do
        ops=$((ops + n))
        faults=$((faults + f))
        case $v in
            NotLinearizable*) violations=$((violations + 1));;
            Unknown*) unknown=$((unknown + 1));;
        esac
    done < <(sed -n 's/^jepsen [^:]*: \([0-9]*\) operations, \([0-9]*\) faults, verdict \([A-Za-z]*\).*/\1 \2 \3/p' "$log")
done

nemesis_minutes=$(awk -v f="$faults" -v s="$fault_secs" 'BEGIN { printf "%.1f", f * s / 60 }')
echo
echo "soak summary ($test_name, $minutes min, logs in $dir)"
echo "  runs:             $runs ($failed failed)"
echo "  nemesis-minutes:  $nemesis_minutes ($faults faults of ${fault_secs} s)"
echo "  operations:       $ops"
echo "  violations:       $violations (runs not linearizable; $unknown unknown)"
echo "  lost acks:        not reported by the harness (a lost acknowledged write shows as a violation)"
[ "$failed" -eq 0 ]
