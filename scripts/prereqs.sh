#!/usr/bin/env bash
# Checks the build prerequisites and names the Debian package of any that is missing.
# With --install, installs missing ones with apt-get (needs root), as CI does.
set -euo pipefail
install=0
[ "${1:-}" = "--install" ] && install=1
missing=()
command -v cargo >/dev/null 2>&1 || { echo "prereqs: cargo is missing: install Rust from https://rustup.rs" >&2; exit 1; }
command -v clang >/dev/null 2>&1 || missing+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/*/libclang*.so* >/dev/null 2>&1 || missing+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
if [ ${#missing[@]} -gt 0 ]; then
  if [ $install = 1 ]; then
    echo "prereqs: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "prereqs: missing Debian packages: ${missing[*]} (RocksDB's bindings need clang and libclang)." >&2
    echo "prereqs: install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
# Optional: nftables for the network-partition tests (they are skipped, with a message, without it).
if ! command -v nft >/dev/null 2>&1; then
  if [ $install = 1 ]; then
    apt-get install -y -qq nftables >/dev/null || echo "prereqs: could not install nftables; partition tests will be skipped" >&2
  else
    echo "prereqs: note: package nftables is not installed; partition tests will be skipped" >&2
  fi
fi
