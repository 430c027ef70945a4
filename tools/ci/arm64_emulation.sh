#!/usr/bin/env bash
# Lets this amd64 Linux kernel run linux/arm64 programs: Debian's qemu-user-static registered
# with binfmt_misc under the F (fix-binary) flag, so the kernel opens the emulator now and
# arm64 programs then run in any mount namespace: the offline Bazel chroot (//squid's *_arm64
# tests), and containers of the arm64 image (podman/docker --platform linux/arm64).
#   tools/ci/arm64_emulation.sh          needs root; .ci/run calls it
# Idempotent. A registration without the F flag (binfmt-support's default elsewhere) is
# replaced, because without it the emulator's path must exist inside every chroot.
set -euo pipefail

die() { printf 'arm64_emulation: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (mounts binfmt_misc and registers an interpreter)"
[ "$(uname -m)" != aarch64 ] || { echo "arm64_emulation: this kernel is arm64 already; nothing to do"; exit 0; }
emulator=/usr/bin/qemu-aarch64-static
if [ ! -x "$emulator" ]; then
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends qemu-user-static >/dev/null \
    || die "cannot install qemu-user-static (apt-get install qemu-user-static)"
fi
[ -x "$emulator" ] || die "$emulator is missing after installing qemu-user-static"

binfmt=/proc/sys/fs/binfmt_misc
[ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt" \
  || die "cannot mount binfmt_misc at $binfmt (a container needs --privileged for this)"
entry="$binfmt/qemu-aarch64"
if [ -e "$entry" ] && ! grep -q '^flags:.*F' "$entry"; then
  echo -1 >"$entry"  # registered without F: remove, then register again below
fi
if [ ! -e "$entry" ]; then
  # ELF64 little-endian, e_machine 183 (EM_AARCH64): the magic and mask of qemu's
  # scripts/qemu-binfmt-conf.sh. The kernel decodes the \x escapes itself.
  magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  echo ":qemu-aarch64:M::$magic:$mask:$emulator:F" >"$binfmt/register" \
    || die "the kernel refused the binfmt_misc registration of $emulator"
fi
grep -q '^enabled' "$entry" || die "$entry is registered but disabled (echo 1 > $entry)"
echo "arm64_emulation: linux/arm64 programs run through $emulator ($(grep '^flags' "$entry"))"
