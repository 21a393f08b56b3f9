#!/usr/bin/env bash
# Checks the build prerequisites and names the Debian package of any that is missing.
#   (no flag)        check only; when something is missing, stop (exit 1) with the one command
#                    that installs it: `sudo <this script> --install`.
#   --install        install what is missing with apt-get (needs root), as CI does.
#   --tests          the tests' packages too: iproute2 (required: the slow-link test), nftables
#                    (optional: the partition tests are skipped without it) and, with --install,
#                    binutils (`strings`, for CI's check of the shipped binaries).
#   --packages-only  check the Debian packages only (not Rust): used by
#                    scripts/verify-prereqs-bare.sh inside a bare Debian root that has no Rust.
# scripts/dev-cluster.sh and scripts/test.sh run this with --install when run as root, and
# without it (stopping at once with the sudo line) as any other user.
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
tests=0
for arg in "$@"; do
  case "$arg" in
    --install) install=1 ;;
    --packages-only) packages_only=1 ;;
    --tests) tests=1 ;;
    *) echo "prereqs: unknown argument $arg (use --install, --tests, --packages-only)" >&2; exit 2 ;;
  esac
done
# The one command that installs what is missing, with this script's absolute path so it works
# from any directory.
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
install_line="sudo $self --install"
[ $tests = 0 ] || install_line+=" --tests"

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

no_cargo=0
if [ $packages_only = 0 ] && ! command -v cargo >/dev/null 2>&1; then
  if [ $install = 1 ]; then
    # Typical under sudo: Rust is installed for the user who builds, not on root's PATH.
    echo "prereqs: note: cargo is not on this PATH; the build needs Rust (1.82 or newer) from https://rustup.rs" >&2
  else
    echo "prereqs: cargo is missing: install Rust (1.82 or newer) from https://rustup.rs" >&2
    no_cargo=1
  fi
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
# For the tests: iproute2 (ip, tc) for the slow-link test, which shapes a network namespace's
# traffic; it fails without them unless KVORUM_ALLOW_SKIP=1.
if [ $tests = 1 ] && [ $packages_only = 0 ] && ! command -v tc >/dev/null 2>&1; then
  missing+=(iproute2)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ $install = 1 ]; then
    echo "prereqs: installing ${missing[*]}"
    apt_install "${missing[@]}"
    if [ -z "$(find_libclang)" ]; then
      echo "prereqs: libclang-dev is installed but no libclang.so was found; set LIBCLANG_PATH" >&2
      exit 1
    fi
  else
    why=()
    for p in "${missing[@]}"; do
      case "$p" in
        libclang-dev) why+=("libclang-dev: RocksDB's bindings need its libclang.so") ;;
        g++|make) why+=("$p: RocksDB's C++ build") ;;
        iproute2) why+=("iproute2: ip and tc for the slow-link test") ;;
      esac
    done
    echo "prereqs: missing Debian packages: ${missing[*]} ($(IFS=';'; echo "${why[*]}" | sed 's/;/; /g'))." >&2
    echo "prereqs: install them, then try again:  $install_line" >&2
    exit 1
  fi
fi
[ $no_cargo = 0 ] || exit 1
echo "prereqs: ok (libclang: $(find_libclang))"
# For CI's check of the shipped binaries (.ci/run): `strings`, from binutils (g++ pulls it in).
if [ $tests = 1 ] && [ $install = 1 ] && ! command -v strings >/dev/null 2>&1; then
  apt_install binutils || echo "prereqs: could not install binutils; CI's fault-string check needs strings" >&2
fi
# Optional: nftables for the network-partition tests (they are skipped, with a message, without it).
if [ $tests = 1 ] && ! command -v nft >/dev/null 2>&1; then
  if [ $install = 1 ]; then
    apt_install nftables || echo "prereqs: could not install nftables; partition tests will be skipped" >&2
  else
    echo "prereqs: note: package nftables is not installed; partition tests will be skipped" >&2
  fi
fi
