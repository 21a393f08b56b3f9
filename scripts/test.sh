#!/usr/bin/env bash
# Runs the whole test suite: unit, storage-suite, end-to-end and Jepsen-style tests.
# KVORUM_JEPSEN_LONG=1 selects longer Jepsen runs.
# Prerequisites (scripts/prereqs.sh): run as root, it installs what is missing; run as another
# user, it stops at once, naming the one sudo command to run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then scripts/prereqs.sh --install --tests; else scripts/prereqs.sh --tests; fi
exec cargo test --workspace "$@"
