#!/usr/bin/env bash
# Checks the build prerequisites and names the Debian package of any that is missing.
# With --install, installs missing ones with apt-get (needs root), as CI does.
# With --packages-only, checks the Debian packages only (not Rust): used by
# scripts/verify-prereqs-bare.sh inside a bare Debian root that has no Rust.
#
# The libclang check looks exactly where RocksDB's bindings (bindgen -> clang-sys 1.9, linked
# mode) look: only $LIBCLANG_PATH when it is set; else `llvm-config --prefix`'s bin/lib/lib64 and
# the directories /usr/local/llvm*/lib*, /usr/local/lib*{,/*,/*/*}, /usr/lib*{,/*,/*/*}, for a
# file named libclang.so or libclang-*.so. A versioned runtime library alone (libclang.so.1,
# libclang-14.so.1 from libclang1-14) does not count: clang-sys does not accept it, and only
# libclang-dev provides the unversioned name.
set -euo pipefail
install=0
packages_only=0
for arg in "$@"; do
  case "$arg" in
    --install) install=1 ;;
    --packages-only) packages_only=1 ;;
    *) echo "prereqs: unknown argument $arg (use --install and/or --packages-only)" >&2; exit 2 ;;
  esac
done

# Prints the libclang that clang-sys would link to, or nothing.
find_libclang() {
  local dirs=() dir pattern file prefix
  shopt -s nullglob
  if [ -n "${LIBCLANG_PATH:-}" ]; then
    if [ -f "$LIBCLANG_PATH" ]; then dirs=("$(dirname "$LIBCLANG_PATH")"); else dirs=("$LIBCLANG_PATH"); fi
  else
    if prefix="$("${LLVM_CONFIG_PATH:-llvm-config}" --prefix 2>/dev/null)"; then
      dirs+=("$prefix/bin" "$prefix/lib" "$prefix/lib64")
    fi
    dirs+=(/usr/local/llvm*/lib* /usr/local/lib*/*/* /usr/local/lib*/* /usr/local/lib* \
      /usr/lib*/*/* /usr/lib*/* /usr/lib*)
  fi
  for dir in "${dirs[@]}"; do
    for pattern in libclang.so 'libclang-*.so'; do
      for file in "$dir"/$pattern; do
        # clang-sys skips libclang-cpp (a different library) the same way.
        case "$(basename "$file")" in *-cpp.*) continue ;; esac
        if [ -e "$file" ]; then echo "$file"; shopt -u nullglob; return 0; fi
      done
    done
  done
  shopt -u nullglob
  return 0
}

if [ $packages_only = 0 ] && ! command -v cargo >/dev/null 2>&1; then
  echo "prereqs: cargo is missing: install Rust (1.82 or newer) from https://rustup.rs" >&2
  exit 1
fi
updated=0
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ $updated = 0 ]; then apt-get update -qq; updated=1; fi
  apt-get install -y -qq "$@" >/dev/null
}
missing=()
[ -n "$(find_libclang)" ] || missing+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
if [ ${#missing[@]} -gt 0 ]; then
  if [ $install = 1 ]; then
    echo "prereqs: installing ${missing[*]}"
    apt_install "${missing[@]}"
    if [ -z "$(find_libclang)" ]; then
      echo "prereqs: libclang-dev is installed but no libclang.so was found; set LIBCLANG_PATH" >&2
      exit 1
    fi
  else
    echo "prereqs: missing Debian packages: ${missing[*]} (RocksDB's bindings need libclang.so from libclang-dev; RocksDB needs a C++ compiler)." >&2
    echo "prereqs: install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
echo "prereqs: ok (libclang: $(find_libclang))"
# For the tests: iproute2 (ip, tc) for the slow-link test, which shapes a network namespace's
# traffic; it fails without them unless KVORUM_ALLOW_SKIP=1.
if [ $packages_only = 0 ] && ! command -v tc >/dev/null 2>&1; then
  if [ $install = 1 ]; then
    apt_install iproute2 || echo "prereqs: could not install iproute2; the slow-link test will fail" >&2
  else
    echo "prereqs: note: package iproute2 (ip, tc) is not installed; the slow-link test needs it" >&2
  fi
fi
# Optional: nftables for the network-partition tests (they are skipped, with a message, without it).
if ! command -v nft >/dev/null 2>&1; then
  if [ $install = 1 ]; then
    apt_install nftables || echo "prereqs: could not install nftables; partition tests will be skipped" >&2
  else
    echo "prereqs: note: package nftables is not installed; partition tests will be skipped" >&2
  fi
fi
