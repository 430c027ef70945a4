/* Force-included into every Squid compile by configure_wrapper.sh.
 *
 * Bazel's C/C++ toolchain passes -D__DATE__="redacted" (and __TIME__,
 * __TIMESTAMP__) so builds do not embed the clock; through rules_foreign_cc and
 * make those flags lose their quotes, so the wrapper drops them and this header
 * defines the same values correctly (-Wno-builtin-macro-redefined is set). */
#undef __DATE__
#define __DATE__ "redacted"
#undef __TIME__
#define __TIME__ "redacted"
#undef __TIMESTAMP__
#define __TIMESTAMP__ "redacted"
