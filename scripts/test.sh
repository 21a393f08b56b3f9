#!/usr/bin/env bash
# Runs the whole test suite: unit, storage-suite, end-to-end and Jepsen-style tests.
# KVORUM_JEPSEN_LONG=1 selects longer Jepsen runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh
exec cargo test --workspace "$@"
