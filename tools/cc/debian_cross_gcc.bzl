"""debian_cross_gcc_toolchain: Debian's cross GCC (`gcc-<triplet>`) as a registered Bazel C/C++ toolchain.

Why this file exists: Bazel autodetects only the build host's own compiler (local_config_cc), and
the configuration rule it generates for it (unix_cc_toolchain_config) is private to rules_cc and
not shipped at all by Debian's rules_cc 0.0.11, which the offline build uses; rules_cc's newer
rule-based toolchain API needs rules_cc >= 0.1, which Debian does not package either. What a
cross GCC needs is small: tool paths, the include directories, and the same default flags that
cc_configure gives the native GCC (copied below), so the two architectures of //squid are
compiled alike. Nothing is downloaded: the compiler, binutils and the target's libc and OpenSSL
are Debian packages on the build host (tools/debian-bazel/packages-cross-<host arch>.txt lists
them; docs/building.md "Platforms" says what to install elsewhere).

The toolchain's target_gnu_system_name is the triplet, so autotools_build (//squid) configures
Squid with --host=<triplet>.
"""

load("@rules_cc//cc:action_names.bzl", "ACTION_NAMES")
load("@rules_cc//cc:cc_toolchain_config_lib.bzl", "feature", "flag_group", "flag_set", "tool_path", "with_feature_set")
load("@rules_cc//cc:defs.bzl", "CcToolchainConfigInfo", "cc_toolchain")
load("@rules_cc//cc/common:cc_common.bzl", "cc_common")

_COMPILE_ACTIONS = [
    ACTION_NAMES.assemble,
    ACTION_NAMES.preprocess_assemble,
    ACTION_NAMES.c_compile,
    ACTION_NAMES.cpp_compile,
    ACTION_NAMES.cpp_header_parsing,
    ACTION_NAMES.cpp_module_compile,
]

_LINK_ACTIONS = [
    ACTION_NAMES.cpp_link_executable,
    ACTION_NAMES.cpp_link_dynamic_library,
    ACTION_NAMES.cpp_link_nodeps_dynamic_library,
]

# cc_configure's flags for a native GCC on Linux (rules_cc's unix_cc_configure), minus the
# host-only `-B/usr/bin` (it would pick the host's, not the cross, linker).
_COMPILE_FLAGS = ["-fstack-protector", "-Wall", "-Wunused-but-set-parameter", "-Wno-free-nonheap-object", "-fno-omit-frame-pointer"]
_OPT_COMPILE_FLAGS = ["-g0", "-O2", "-D_FORTIFY_SOURCE=1", "-DNDEBUG", "-ffunction-sections", "-fdata-sections"]
_DBG_COMPILE_FLAGS = ["-g"]
_CXX_FLAGS = ["-std=c++17"]
_UNFILTERED_COMPILE_FLAGS = [
    "-fno-canonical-system-headers",
    "-Wno-builtin-macro-redefined",
    "-D__DATE__=\"redacted\"",
    "-D__TIMESTAMP__=\"redacted\"",
    "-D__TIME__=\"redacted\"",
]
_LINK_FLAGS = ["-Wl,-no-as-needed", "-Wl,-z,relro,-z,now", "-pass-exit-codes"]
_LINK_LIBS = ["-Wl,--push-state,-as-needed", "-lstdc++", "-Wl,--pop-state", "-Wl,--push-state,-as-needed", "-lm", "-Wl,--pop-state"]
_OPT_LINK_FLAGS = ["-Wl,--gc-sections"]

# The GNU tools of a Debian cross toolchain: /usr/bin/<triplet>-<tool>.
_TOOLS = {
    "ar": "ar",
    "cpp": "cpp",
    "gcc": "gcc",
    "gcov": "gcov",
    "ld": "ld",
    "nm": "nm",
    "objcopy": "objcopy",
    "objdump": "objdump",
    "strip": "strip",
}

def _flags(actions, flags, features = None):
    return flag_set(
        actions = actions,
        flag_groups = [flag_group(flags = flags)],
        with_features = [with_feature_set(features = features)] if features else [],
    )

def _config_impl(ctx):
    triplet = ctx.attr.triplet
    cxx = [ACTION_NAMES.cpp_compile, ACTION_NAMES.cpp_header_parsing, ACTION_NAMES.cpp_module_compile]
    features = [
        feature(name = "opt"),
        feature(name = "dbg"),
        feature(name = "fastbuild"),
        feature(name = "supports_pic", enabled = True),
        feature(name = "supports_dynamic_linker", enabled = True),
        feature(
            name = "default_compile_flags",
            enabled = True,
            flag_sets = [
                _flags(_COMPILE_ACTIONS, _COMPILE_FLAGS),
                _flags(_COMPILE_ACTIONS, _DBG_COMPILE_FLAGS, ["dbg"]),
                _flags(_COMPILE_ACTIONS, _OPT_COMPILE_FLAGS, ["opt"]),
                _flags(cxx, _CXX_FLAGS),
            ],
        ),
        feature(
            name = "default_link_flags",
            enabled = True,
            flag_sets = [
                _flags(_LINK_ACTIONS, _LINK_FLAGS + _LINK_LIBS),
                _flags(_LINK_ACTIONS, _OPT_LINK_FLAGS, ["opt"]),
            ],
        ),
        # Last on the command line, as cc_configure orders them (reproducible __DATE__ & co).
        feature(
            name = "unfiltered_compile_flags",
            enabled = True,
            flag_sets = [_flags(_COMPILE_ACTIONS, _UNFILTERED_COMPILE_FLAGS)],
        ),
    ]
    return cc_common.create_cc_toolchain_config_info(
        ctx = ctx,
        toolchain_identifier = "debian-cross-" + triplet,
        host_system_name = "local",
        target_system_name = triplet,
        target_cpu = ctx.attr.target_cpu,
        target_libc = "glibc",
        compiler = "gcc",
        abi_version = "gcc",
        abi_libc_version = "glibc",
        tool_paths = [tool_path(name = name, path = "/usr/bin/%s-%s" % (triplet, tool)) for name, tool in _TOOLS.items()],
        cxx_builtin_include_directories = [
            "/usr/lib/gcc-cross/%s/%s/include" % (triplet, ctx.attr.gcc_version),
            "/usr/%s/include" % triplet,
            "/usr/include/%s" % triplet,
            "/usr/include",
            "/usr/%s/include/c++/%s" % (triplet, ctx.attr.gcc_version),
            "/usr/%s/include/c++/%s/%s" % (triplet, ctx.attr.gcc_version, triplet),
        ],
        features = features,
    )

_debian_cross_gcc_config = rule(
    implementation = _config_impl,
    attrs = {
        "gcc_version": attr.string(mandatory = True),
        "target_cpu": attr.string(mandatory = True),
        "triplet": attr.string(mandatory = True),
    },
    provides = [CcToolchainConfigInfo],
)

def debian_cross_gcc_toolchain(name, triplet, target_cpu, exec_cpu, gcc_version = "14"):
    """A cc_toolchain + toolchain for /usr/bin/<triplet>-gcc, from an `exec_cpu` Linux host to `target_cpu` Linux.

    Args:
      name: the toolchain target (register it as //pkg:name).
      triplet: the GNU triplet of the target (aarch64-linux-gnu); names the tools and --host.
      target_cpu: the @platforms//cpu constraint of the target (arm64).
      exec_cpu: the @platforms//cpu constraint of the build host that runs the compiler.
      gcc_version: the major GCC version of Debian's gcc-<triplet> (its include directories).
    """
    _debian_cross_gcc_config(
        name = name + "_config",
        gcc_version = gcc_version,
        target_cpu = target_cpu,
        triplet = triplet,
    )
    native.filegroup(name = name + "_no_files")  # the tools are the host's, as for local_config_cc
    cc_toolchain(
        name = name + "_cc_toolchain",
        all_files = ":%s_no_files" % name,
        ar_files = ":%s_no_files" % name,
        as_files = ":%s_no_files" % name,
        compiler_files = ":%s_no_files" % name,
        dwp_files = ":%s_no_files" % name,
        linker_files = ":%s_no_files" % name,
        objcopy_files = ":%s_no_files" % name,
        strip_files = ":%s_no_files" % name,
        supports_param_files = True,
        toolchain_config = ":%s_config" % name,
    )
    native.toolchain(
        name = name,
        exec_compatible_with = ["@platforms//os:linux", "@platforms//cpu:" + exec_cpu],
        target_compatible_with = ["@platforms//os:linux", "@platforms//cpu:" + target_cpu],
        toolchain = ":%s_cc_toolchain" % name,
        toolchain_type = "@bazel_tools//tools/cpp:toolchain_type",
    )
