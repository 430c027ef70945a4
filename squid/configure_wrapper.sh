#!/usr/bin/env bash
# Runs Squid's ./configure for rules_foreign_cc's configure_make (it is the
# rule's `configure_prefix`, so it receives "<srcdir>/configure --prefix=<sandbox
# dir> <flags...>" with CC, CFLAGS, ... from Bazel's C/C++ toolchain in the
# environment) and makes the result independent of the sandbox it ran in.
#
# Why each step:
#  - --prefix: rules_foreign_cc passes a sandbox directory; Squid compiles its
#    prefix-derived paths in. We configure for /usr and `make install` with
#    DESTDIR instead (see BUILD.bazel), so the binary looks in /usr, /etc/squid.
#  - -D__DATE__="redacted" & co. from Bazel's toolchain lose their quotes on the
#    way through make (rules_foreign_cc issue #239); a force-included header
#    defines the same macros properly.
#  - Bazel's autodetected toolchain adds -std=c++14; Squid 7 needs C++17.
#  - -ffile-prefix-map: __FILE__ (used in Squid's debug messages) and any debug
#    info name sandbox paths otherwise.
#  - -static-libstdc++ -static-libgcc: the C++ runtime comes from the build
#    host's GCC; linking it in makes the binary independent of the image's
#    libstdc++ version (see BUILD.bazel, "glibc/libstdc++ baseline").
#  - `squid -v` prints configure's recorded command line, which includes the
#    toolchain's environment (CC, CFLAGS with the paths above). We record the
#    flags as given in //squid:configure_flags.bzl instead.
set -euo pipefail

die() { printf 'squid configure_wrapper: error: %s\n' "$*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: configure_wrapper.sh <path/to/configure> [configure args...]"
configure=$1; shift
[ -x "$configure" ] || die "not an executable configure script: $configure"
: "${EXT_BUILD_ROOT:?set by rules_foreign_cc}" "${BUILD_TMPDIR:?set by rules_foreign_cc}"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dates_header="$here/reproducible_dates.h"
[ -f "$dates_header" ] || die "missing $dates_header (a build_data input of //squid:squid_build)"

# Drop rules_foreign_cc's sandbox --prefix; keep the flags from BUILD.bazel.
flags=()
for arg in "$@"; do
  case "$arg" in
    --prefix=*) ;;
    *) flags+=("$arg") ;;
  esac
done

# Rewrites one space-separated flag list: drops the unquotable date macros and
# any -std= the toolchain chose, then appends our own flags.
rewrite_flags() {
  local out=() flag
  for flag in $1; do
    case "$flag" in
      -D__DATE__=* | -D__TIME__=* | -D__TIMESTAMP__=*) ;;
      -std=*) ;;
      *) out+=("$flag") ;;
    esac
  done
  shift
  printf '%s' "${out[*]} $*"
}

# The last -ffile-prefix-map that matches wins in GCC, so the more specific
# build directory (inside EXT_BUILD_ROOT) goes last.
prefix_maps="-ffile-prefix-map=$EXT_BUILD_ROOT=/usr/src/squid -ffile-prefix-map=$BUILD_TMPDIR=/usr/src/squid/build"
# Optimised, no debug info, Squid's own assertions kept (as Debian builds
# it), Debian's hardening flags.
hardening="-U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2 -fstack-protector-strong"
common="-Wno-builtin-macro-redefined -include $dates_header $prefix_maps -O2 -g0 -UNDEBUG $hardening"
CFLAGS=$(rewrite_flags "${CFLAGS:-}" "$common")
CXXFLAGS=$(rewrite_flags "${CXXFLAGS:-}" "-std=c++17 $common")
CPPFLAGS=$(rewrite_flags "${CPPFLAGS:-}")
# Bazel's toolchain links C++ as `gcc ... -lstdc++`, which would pull in the
# shared libstdc++ (and leaves Squid's build-time tool cf_gen, linked without
# LDFLAGS, with no C++ runtime at all). The g++ driver with -static-libstdc++
# links the runtime statically instead.
case "${CXX:-}" in
  */gcc | gcc) CXX="${CXX%gcc}g++" ;;
  */clang | clang) CXX="${CXX}++" ;;
esac
ldflags=()
for flag in ${LDFLAGS:-}; do
  [ "$flag" = "-lstdc++" ] || ldflags+=("$flag")
done
# --as-needed last: Bazel's flags say -no-as-needed, and Squid's configure
# adds libraries (libcrypt, ...) to every program whether it uses them or not;
# each binary should name only what it uses (Debian links the same way).
LDFLAGS="${ldflags[*]} -static-libstdc++ -static-libgcc -Wl,-z,relro -Wl,-z,now -Wl,--as-needed"
export CXX
export CFLAGS CXXFLAGS CPPFLAGS LDFLAGS

"$configure" --prefix=/usr "${flags[@]}"

# Replace the recorded command line (with the sandbox-specific environment) by
# the flags themselves, quoted as configure quotes them.
recorded=" '--prefix=/usr'"
for arg in "${flags[@]}"; do recorded+=" '$arg'"; done
header=include/autoconf.h
grep -q '^#define SQUID_CONFIGURE_OPTIONS ' "$header" \
  || die "$header has no SQUID_CONFIGURE_OPTIONS line; did Squid change how it records configure options?"
escaped=$(printf '%s' "$recorded" | sed -e 's/[\\&|]/\\&/g')
sed -i -e "s|^#define SQUID_CONFIGURE_OPTIONS .*|#define SQUID_CONFIGURE_OPTIONS \"$escaped\"|" "$header"
if grep -F -e "$EXT_BUILD_ROOT" "$header" >/dev/null; then
  die "$header still names the sandbox ($EXT_BUILD_ROOT)"
fi
