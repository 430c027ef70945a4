#!/usr/bin/env bash
# The action behind autotools_build (squid/autotools.bzl): configure, make and make install of
# a release tree, with the C/C++ toolchain that Bazel resolved, into declared outputs.
#
# Arguments (all from the rule): NAME=value settings, then
#   --configure <configure flags...> --make <make args...> --outputs <paths below DESTDIR...>
# Settings: SRCDIR PREFIX CC CXX AR STRIP TOOLCHAIN_CFLAGS TOOLCHAIN_CXXFLAGS TOOLCHAIN_LDFLAGS
#           COPTS CXXOPTS LINKOPTS FORCE_INCLUDES FIXUP INSTALL_TARGET OUT_ROOT [BUILD_CC BUILD_CXX_ENV]
#           [OBJCOPY DROP_START_FILE_NOTES],
#           ENV:NAME=value
#
# Why each step:
#  - The build runs in a scratch copy of the sources: configure and make write into the tree,
#    and Bazel's inputs are read-only symlinks. `cp -p` keeps the release's timestamps, so make
#    never decides that configure or Makefile.in are out of date and reruns autotools.
#  - --prefix is the installed location (/usr), not a sandbox path, because programs compile
#    their prefix-derived paths in; `make install DESTDIR=` stages the files instead.
#  - -ffile-prefix-map: __FILE__ (Squid's debug messages) and any debug info would otherwise
#    name the scratch and sandbox directories, which differ every build.
#  - The toolchain's -std= and -D__DATE__/__TIME__/__TIMESTAMP__ flags are dropped: the first
#    is for Bazel's own cc rules (Bazel 7's autodetected toolchain says -std=c++14), the second
#    loses its quotes in make recipes (a force-included header defines them instead).
#  - C++ is compiled and linked with the C compiler's C++ driver and without the toolchain's
#    -lstdc++: Bazel's toolchains link C++ as `gcc ... -lstdc++`, which would pull in the
#    shared libstdc++ even with -static-libstdc++, and leave programs that a build links
#    without LDFLAGS (Squid's cf_gen) with no C++ runtime at all.
#  - DROP_START_FILE_NOTES=1 (LINKOPTS carry --package-metadata): ld puts the note it writes
#    into the same output section as any .note.package of the inputs, and Debian's cross glibc
#    stamps its crt1.o variants with {"name":"cross-toolchain-base",...}, which would come first
#    and name the wrong package to scanners. gcc takes start files from a -B directory first, so
#    the link gets copies of them without that note.
#  - Tool paths and flags that are relative to Bazel's execroot (hermetic toolchains) are
#    made absolute, since configure and make run in another directory.
set -euo pipefail

die() { printf 'autotools_build: error: %s\n' "$*" >&2; exit 1; }

execroot=$PWD
declare -A setting=()
toolchain_env=()
while [ $# -gt 0 ] && [ "$1" != --configure ]; do
  case "$1" in
    ENV:*=*) toolchain_env+=("${1#ENV:}") ;;
    *=*) setting[${1%%=*}]=${1#*=} ;;
    *) die "unexpected argument '$1'" ;;
  esac
  shift
done
[ "${1:-}" = --configure ] || die "missing --configure"; shift
configure_flags=()
while [ $# -gt 0 ] && [ "$1" != --make ]; do configure_flags+=("$1"); shift; done
[ "${1:-}" = --make ] || die "missing --make"; shift
make_args=()
while [ $# -gt 0 ] && [ "$1" != --outputs ]; do make_args+=("$1"); shift; done
[ "${1:-}" = --outputs ] || die "missing --outputs"; shift
outputs=("$@")

# An execroot-relative path (external/..., bazel-out/...) made absolute; others unchanged.
absolute() {
  case "$1" in
    external/* | bazel-out/*) printf '%s' "$execroot/$1" ;;
    -I* | -L* | -B*) printf '%s%s' "${1:0:2}" "$(absolute "${1:2}")" ;;
    --sysroot=* | -isystem=* | -fuse-ld=*) printf '%s=%s' "${1%%=*}" "$(absolute "${1#*=}")" ;;
    *) printf '%s' "$1" ;;
  esac
}

# One space-separated flag list: the toolchain's flags minus the ones named above, made
# absolute, then ours.
flags() {
  local toolchain=$1 out=() flag
  shift
  for flag in $toolchain; do
    case "$flag" in
      -D__DATE__=* | -D__TIME__=* | -D__TIMESTAMP__=* | -std=* | -lstdc++) ;;
      *) out+=("$(absolute "$flag")") ;;
    esac
  done
  printf '%s' "${out[*]} $*"
}

for name in SRCDIR PREFIX CC CXX INSTALL_TARGET OUT_ROOT; do
  [ -n "${setting[$name]:-}" ] || die "setting $name is empty"
done
srcdir="$execroot/${setting[SRCDIR]}"
[ -x "$srcdir/configure" ] || die "no executable configure in $srcdir"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/autotools_build.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
build="$scratch/src"
staging="$scratch/destdir"
log="$scratch/build.log"
cp -R -L -p "$srcdir" "$build"
mkdir "$staging"

# The C++ driver beside a C compiler (gcc -> g++, clang -> clang++), else the given fallback.
cxx_driver() {
  case "$1" in
    *gcc) printf '%s' "${1%gcc}g++" ;;
    *clang) printf '%s' "${1}++" ;;
    *) printf '%s' "$2" ;;
  esac
}
cc=$(absolute "${setting[CC]}")
cxx=$(cxx_driver "$cc" "$(absolute "${setting[CXX]}")")

includes=""
for header in ${setting[FORCE_INCLUDES]:-}; do includes+=" -include $execroot/$header"; done
# The last matching -ffile-prefix-map wins in GCC, so the more specific scratch tree goes last.
prefix_maps="-ffile-prefix-map=$execroot=/usr/src/execroot -ffile-prefix-map=$build=/usr/src/build"
common="$prefix_maps$includes ${setting[COPTS]:-}"

export CC="$cc" CXX="$cxx"
export AR; AR=$(absolute "${setting[AR]:-ar}")
if [ -n "${setting[STRIP]:-}" ]; then export STRIP; STRIP=$(absolute "${setting[STRIP]}"); fi
export CFLAGS; CFLAGS=$(flags "${setting[TOOLCHAIN_CFLAGS]:-}" "$common")
export CXXFLAGS; CXXFLAGS=$(flags "${setting[TOOLCHAIN_CXXFLAGS]:-}" "$common ${setting[CXXOPTS]:-}")
export LDFLAGS; LDFLAGS=$(flags "${setting[TOOLCHAIN_LDFLAGS]:-}" "${setting[LINKOPTS]:-}")
if [ "${setting[DROP_START_FILE_NOTES]:-}" = 1 ]; then
  objcopy=$(absolute "${setting[OBJCOPY]:-objcopy}")
  start_files="$scratch/start_files"
  mkdir "$start_files"
  for name in crt1.o Scrt1.o rcrt1.o gcrt1.o grcrt1.o; do
    # -print-file-name prints the bare name when the C runtime has no such file.
    found=$("$cc" $CFLAGS -print-file-name="$name")
    [ "$found" = "$name" ] || "$objcopy" --remove-section=.note.package "$found" "$start_files/$name" \
      || die "$objcopy could not copy $found without its .note.package"
  done
  LDFLAGS="-B$start_files/ $LDFLAGS"
fi
for assignment in "${toolchain_env[@]}"; do export "${assignment?}"; done
# Cross builds: the build machine's C++ compiler for compile-time tools (BUILD_CXX_ENV names
# the variables, e.g. Squid's BUILDCXX); their flags default to CXXFLAGS, which are generic.
if [ -n "${setting[BUILD_CC]:-}" ]; then
  build_cc=$(absolute "${setting[BUILD_CC]}")
  build_cxx=$(cxx_driver "$build_cc" "$build_cc")
  for name in ${setting[BUILD_CXX_ENV]:-}; do export "$name=$build_cxx"; done
fi

# Shows the end of the log (and of config.log) when a step fails: the error is there.
fail_with_log() {
  printf 'autotools_build: %s failed; the last lines of its output:\n' "$1" >&2
  tail -n 60 "$log" >&2
  [ "$1" != configure ] || [ ! -f "$build/config.log" ] || { echo '--- config.log (end) ---' >&2; tail -n 40 "$build/config.log" >&2; }
  exit 1
}

cd "$build"
./configure --prefix="${setting[PREFIX]}" "${configure_flags[@]}" >"$log" 2>&1 || fail_with_log configure
if [ -n "${setting[FIXUP]:-}" ]; then
  export AUTOTOOLS_EXECROOT=$execroot
  "$execroot/${setting[FIXUP]}" "--prefix=${setting[PREFIX]}" "${configure_flags[@]}" || die "the fixup tool ${setting[FIXUP]} failed"
fi
jobs=$(nproc 2>/dev/null || echo 2)
make -j"$jobs" "${make_args[@]}" >>"$log" 2>&1 || fail_with_log make
make "${setting[INSTALL_TARGET]}" DESTDIR="$staging" "${make_args[@]}" >>"$log" 2>&1 || fail_with_log "make ${setting[INSTALL_TARGET]}"

for path in "${outputs[@]}"; do
  [ -e "$staging/$path" ] || die "make ${setting[INSTALL_TARGET]} did not install $path"
  destination="$execroot/${setting[OUT_ROOT]}$path"
  mkdir -p "$(dirname "$destination")"
  if [ -d "$staging/$path" ]; then
    mkdir -p "$destination"
    cp -R -p "$staging/$path/." "$destination/"
  else
    cp -p "$staging/$path" "$destination"
  fi
done
