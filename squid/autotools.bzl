"""autotools_build: `configure && make && make install` of a source tree, as one Bazel action.

Why this rule exists: //squid used rules_foreign_cc's configure_make, which no registry
reachable from CI serves, whose 0.16 release needs Bazel 8 for bzlmod, whose default make and
pkg-config toolchains download and build their own sources, and three of whose behaviours
needed a wrapper script (a sandbox --prefix, unquoted -D__DATE__ macros, -std=c++14). Squid
needs none of its generality; this rule is the part it does need.

What the action does (squid/autotools_build.sh, which explains each step):
  1. copies the source tree (the directory holding `configure` among `srcs`) into a
     scratch directory, keeping the release's timestamps so make never reruns autotools;
  2. runs `configure --prefix=<prefix> <configure_flags>` with CC, CXX, AR, STRIP, CFLAGS,
     CXXFLAGS and LDFLAGS taken from the C/C++ toolchain Bazel resolved for the target
     platform (cc_common), so the toolchain, not the host's PATH, decides the compiler; a
     toolchain whose target_gnu_system_name is a GNU triplet (a cross toolchain) adds
     `--host=<triplet>`, which puts configure in cross mode, and sets the `build_cxx_env`
     variables to the exec platform's C++ compiler for the package's compile-time tools;
  3. runs the optional `fixup` tool in the configured tree (Squid rewrites the configure
     options it records for `squid -v`);
  4. `make -j$(nproc) <make_args>` and `make <install_target> DESTDIR=<staging> <make_args>`;
  5. copies `out_files` and `out_dirs` (paths below DESTDIR) into the declared outputs.

Kept from the toolchain's flags: everything except `-std=` (the project's build system picks
its language standard; add one in copts/cxxopts) and the `-D__DATE__=...`-style macros (make
recipes strip their quotes; use `force_includes` with a header that defines them). The C++
compiler is the toolchain's C compiler's C++ driver (gcc -> g++, clang -> clang++) and the
toolchain's `-lstdc++` is dropped, so `-static-libstdc++` in linkopts really links the C++
runtime statically. Sandbox paths are mapped away with -ffile-prefix-map.

From the build host it needs: make, a POSIX shell with the usual tools configure uses (sed,
awk, grep, ...), and whatever libraries/headers configure_flags ask for (for Squid:
libssl-dev, pkgconf). Nothing is downloaded; the sources come from `srcs`.
"""

load("@rules_cc//cc:action_names.bzl", "ACTION_NAMES")
load("@rules_cc//cc:find_cc_toolchain.bzl", "find_cc_toolchain", "use_cc_toolchain")
load("@rules_cc//cc/common:cc_common.bzl", "cc_common")

def _command_line(feature_configuration, action_name, variables):
    return cc_common.get_memory_inefficient_command_line(
        feature_configuration = feature_configuration,
        action_name = action_name,
        variables = variables,
    )

def _joined(label, name, flags):
    for flag in flags:
        if " " in flag:
            fail("%s: the toolchain's %s flag %r contains a space, which make cannot pass through" % (label, name, flag))
    return " ".join(flags)

def _source_root(ctx):
    configure = [f for f in ctx.files.srcs if f.basename == "configure"]
    if not configure:
        fail("%s: no `configure` script among srcs" % ctx.label)
    return sorted(configure, key = lambda f: len(f.path))[0].dirname

def _autotools_build_impl(ctx):
    cc_toolchain = find_cc_toolchain(ctx)
    feature_configuration = cc_common.configure_features(
        ctx = ctx,
        cc_toolchain = cc_toolchain,
        requested_features = ctx.features,
        unsupported_features = ctx.disabled_features,
    )
    cpp = ctx.fragments.cpp
    c_variables = cc_common.create_compile_variables(
        feature_configuration = feature_configuration,
        cc_toolchain = cc_toolchain,
        user_compile_flags = cpp.copts + cpp.conlyopts,
    )
    cxx_variables = cc_common.create_compile_variables(
        feature_configuration = feature_configuration,
        cc_toolchain = cc_toolchain,
        user_compile_flags = cpp.copts + cpp.cxxopts,
    )
    link_variables = cc_common.create_link_variables(
        feature_configuration = feature_configuration,
        cc_toolchain = cc_toolchain,
        is_linking_dynamic_library = False,
        user_link_flags = cpp.linkopts,
    )

    def tool(action_name):
        return cc_common.get_tool_for_action(feature_configuration = feature_configuration, action_name = action_name)

    env = cc_common.get_environment_variables(
        feature_configuration = feature_configuration,
        action_name = ACTION_NAMES.c_compile,
        variables = c_variables,
    )
    triplet = cc_toolchain.target_gnu_system_name
    host_flags = ["--host=" + triplet] if triplet.count("-") >= 1 else []

    out_files = [ctx.actions.declare_file(ctx.label.name + "/" + path) for path in ctx.attr.out_files]
    out_dirs = [ctx.actions.declare_directory(ctx.label.name + "/" + path) for path in ctx.attr.out_dirs]

    args = ctx.actions.args()
    args.add("SRCDIR=" + _source_root(ctx))
    args.add("PREFIX=" + ctx.attr.prefix)
    args.add("CC=" + tool(ACTION_NAMES.c_compile))
    args.add("CXX=" + tool(ACTION_NAMES.cpp_compile))
    args.add("AR=" + tool(ACTION_NAMES.cpp_link_static_library))
    args.add("STRIP=" + cc_toolchain.strip_executable)
    args.add("TOOLCHAIN_CFLAGS=" + _joined(ctx.label, "C", _command_line(feature_configuration, ACTION_NAMES.c_compile, c_variables)))
    args.add("TOOLCHAIN_CXXFLAGS=" + _joined(ctx.label, "C++", _command_line(feature_configuration, ACTION_NAMES.cpp_compile, cxx_variables)))
    args.add("TOOLCHAIN_LDFLAGS=" + _joined(ctx.label, "link", _command_line(feature_configuration, ACTION_NAMES.cpp_link_executable, link_variables)))
    if host_flags and ctx.attr.build_cxx_env:
        # Cross mode: a package's compile-time tools (Squid's cf_gen) must run on the build
        # machine, so they get the exec platform's compiler (configure's precious variables).
        build_toolchain = ctx.attr._build_cc_toolchain[cc_common.CcToolchainInfo]
        args.add("BUILD_CC=" + build_toolchain.compiler_executable)
        args.add("BUILD_CXX_ENV=" + " ".join(ctx.attr.build_cxx_env))
    args.add("COPTS=" + " ".join(ctx.attr.copts))
    args.add("CXXOPTS=" + " ".join(ctx.attr.cxxopts))
    args.add("LINKOPTS=" + " ".join(ctx.attr.linkopts))
    args.add("FORCE_INCLUDES=" + " ".join([f.path for f in ctx.files.force_includes]))
    args.add("FIXUP=" + (ctx.executable.fixup.path if ctx.attr.fixup else ""))
    args.add("INSTALL_TARGET=" + ctx.attr.install_target)

    # bazel-out/<config>/bin/<package>/<name>/: DESTDIR's layout is copied below it.
    args.add("OUT_ROOT=" + out_files[0].path[:-len(ctx.attr.out_files[0])])
    for name, value in sorted(env.items()):
        args.add("ENV:%s=%s" % (name, value))
    args.add("--configure")
    args.add_all(host_flags + ctx.attr.configure_flags)
    args.add("--make")
    args.add_all(ctx.attr.make_args)
    args.add("--outputs")
    args.add_all(ctx.attr.out_files)
    args.add_all(ctx.attr.out_dirs)

    tools = [ctx.executable.fixup] if ctx.attr.fixup else []
    ctx.actions.run(
        executable = ctx.executable._build_script,
        arguments = [args],
        inputs = depset(
            ctx.files.srcs + ctx.files.force_includes,
            transitive = [cc_toolchain.all_files, ctx.attr._build_cc_toolchain[cc_common.CcToolchainInfo].all_files],
        ),
        tools = tools,
        outputs = out_files + out_dirs,
        # PATH for make, sed, awk and the rest of configure's tools on the build host.
        use_default_shell_env = True,
        mnemonic = "AutotoolsBuild",
        progress_message = "Compiling %{label} (configure && make; several minutes)",
    )
    return [DefaultInfo(files = depset(out_files + out_dirs))]

autotools_build = rule(
    implementation = _autotools_build_impl,
    doc = "configure && make && make install of a source tree in one action, with the resolved C/C++ toolchain (see the file header).",
    attrs = {
        "srcs": attr.label_list(mandatory = True, allow_files = True, doc = "The unpacked release tree (must contain `configure`)."),
        "configure_flags": attr.string_list(doc = "Arguments of ./configure after --prefix."),
        "prefix": attr.string(default = "/usr", doc = "--prefix: the installed paths compiled into the program."),
        "make_args": attr.string_list(doc = "Variables/arguments for both make runs."),
        "install_target": attr.string(default = "install", doc = "The make target that installs into DESTDIR (e.g. install-strip)."),
        "build_cxx_env": attr.string_list(doc = "In a cross build, environment variables set to the build machine's C++ compiler for configure (e.g. Squid's BUILDCXX, which compiles cf_gen); unset in native builds."),
        "copts": attr.string_list(doc = "Appended to the toolchain's CFLAGS and CXXFLAGS."),
        "cxxopts": attr.string_list(doc = "Appended to CXXFLAGS only."),
        "linkopts": attr.string_list(doc = "Appended to the toolchain's LDFLAGS."),
        "force_includes": attr.label_list(allow_files = [".h"], doc = "Headers passed as `-include` to every compile."),
        "fixup": attr.label(executable = True, cfg = "exec", allow_single_file = True, doc = "Run in the configured tree with the configure flags as arguments, before make."),
        "out_files": attr.string_list(mandatory = True, allow_empty = False, doc = "Installed files (paths below DESTDIR, e.g. usr/sbin/squid) to declare as outputs."),
        "out_dirs": attr.string_list(doc = "Installed directories (below DESTDIR) to declare as outputs."),
        "_build_script": attr.label(default = ":autotools_build.sh", executable = True, cfg = "exec", allow_single_file = True),
        # The C/C++ toolchain of the machine that runs the build (for build_cxx_env).
        "_build_cc_toolchain": attr.label(default = "@rules_cc//cc:current_cc_toolchain", cfg = "exec"),
    },
    fragments = ["cpp"],
    toolchains = use_cc_toolchain(),
)
