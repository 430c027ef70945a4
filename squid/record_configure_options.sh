#!/usr/bin/env bash
# The `fixup` step of //squid:squid_build (autotools_build): run in the configured tree with
# the configure flags as arguments. `squid -v` prints the configure options that configure
# recorded in include/autoconf.h, and configure records the toolchain's environment too (CC,
# CFLAGS with per-build scratch and sandbox paths). Record the flags as given in
# //squid:configure_flags.bzl instead, quoted as configure quotes them, so `squid -v` says
# how Squid was configured and the binary does not change from one build directory to the next.
set -euo pipefail

die() { printf 'squid record_configure_options: error: %s\n' "$*" >&2; exit 1; }

header=include/autoconf.h
grep -q '^#define SQUID_CONFIGURE_OPTIONS ' "$header" \
  || die "$header has no SQUID_CONFIGURE_OPTIONS line; did Squid change how it records configure options?"
recorded=""
for arg in "$@"; do recorded+=" '$arg'"; done
escaped=$(printf '%s' "$recorded" | sed -e 's/[\\&|]/\\&/g')
sed -i -e "s|^#define SQUID_CONFIGURE_OPTIONS .*|#define SQUID_CONFIGURE_OPTIONS \"$escaped\"|" "$header"
for path in "$PWD" "${AUTOTOOLS_EXECROOT:-}"; do
  if [ -n "$path" ] && grep -F -e "$path" "$header" >/dev/null; then
    die "$header still names the build directory ($path)"
  fi
done
