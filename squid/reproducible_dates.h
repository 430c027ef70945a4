/* Force-included into every Squid compile (force_includes of //squid:squid_build).
 *
 * Bazel's C/C++ toolchain passes -D__DATE__="redacted" (and __TIME__,
 * __TIMESTAMP__) so builds do not embed the clock; through make those flags
 * lose their quotes, so autotools_build drops them and this header defines the
 * same values correctly (-Wno-builtin-macro-redefined is set). */
#undef __DATE__
#define __DATE__ "redacted"
#undef __TIME__
#define __TIME__ "redacted"
#undef __TIMESTAMP__
#define __TIMESTAMP__ "redacted"
