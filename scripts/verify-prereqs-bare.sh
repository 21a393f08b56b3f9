#!/usr/bin/env bash
# Proves scripts/prereqs.sh on a bare Debian system rather than on this machine's leftovers:
# builds a minimal Debian 12 root with debootstrap (minbase: no compiler, no clang), then inside
# it (chroot) checks that
#   1. with only clang's runtime library installed (libclang1-14: libclang-14.so.1, which the old
#      check wrongly accepted), `prereqs.sh --packages-only` fails and names libclang-dev (and
#      g++, make);
#   2. `prereqs.sh --packages-only --install` installs them and passes;
#   3. the check then finds the libclang.so that clang-sys links to.
# Needs root and the Debian package mirror (installs debootstrap if missing); ~5 minutes.
# Not part of scripts/test.sh: it downloads a Debian base system. Usage:
#   scripts/verify-prereqs-bare.sh [ROOT_DIR]   (default: a new temporary directory, removed after)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "verify-prereqs-bare: needs root (debootstrap, chroot)" >&2; exit 2; }
command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
root="${1:-}"
cleanup=0
if [ -z "$root" ]; then root="$(mktemp -d /tmp/kvorum-bare-XXXXXX)"; cleanup=1; fi
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
umount_all() {
  umount "$root/proc" 2>/dev/null || true
  umount "$root/dev" 2>/dev/null || true
  if [ $cleanup = 1 ]; then rm -rf "$root"; fi
}
trap umount_all EXIT
if [ ! -x "$root/bin/bash" ]; then
  echo "verify-prereqs-bare: debootstrap --variant=minbase bookworm $root"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 \
    || { tail -20 "$root.debootstrap.log" >&2; exit 1; }
fi
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
cp scripts/prereqs.sh "$root/prereqs.sh"

echo "verify-prereqs-bare: 1. check on the bare root with clang's runtime library only"
chroot "$root" /bin/bash -c 'apt-get update -qq && apt-get install -y -qq libclang1-14 >/dev/null' 2>&1 \
  | grep -v '^debconf' | sed 's/^/    /' || true
chroot "$root" /bin/bash -c 'ls /usr/lib/llvm-14/lib/libclang*.so* /usr/lib/*/libclang*.so* 2>/dev/null' | sed 's/^/    present: /' || true
set +e
out="$(chroot "$root" /bin/bash /prereqs.sh --packages-only 2>&1)"
rc=$?
set -e
echo "$out" | sed 's/^/    /'
if [ $rc = 0 ] || ! grep -q 'libclang-dev' <<<"$out"; then
  echo "verify-prereqs-bare: FAIL: the check passed or did not name libclang-dev on a bare system" >&2
  exit 1
fi

echo "verify-prereqs-bare: 2. --install on the bare root"
chroot "$root" /bin/bash /prereqs.sh --packages-only --install 2>&1 | sed 's/^/    /'

echo "verify-prereqs-bare: 3. check again"
out="$(chroot "$root" /bin/bash /prereqs.sh --packages-only 2>&1)"
echo "$out" | sed 's/^/    /'
grep -q 'libclang: /usr/lib/llvm-.*/lib/libclang' <<<"$out" \
  || { echo "verify-prereqs-bare: FAIL: no libclang.so found after install" >&2; exit 1; }
echo "verify-prereqs-bare: ok"
