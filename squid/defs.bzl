"""Rules that lay out the installed Squid tree for tests and for the image."""

def _install_parts(ctx):
    """Returns (squid binary, usr/lib/squid dir, usr/share/squid dir) of the install."""
    binary = None
    helpers = None
    data = None
    for f in ctx.attr.install[DefaultInfo].files.to_list():
        if f.path.endswith("/usr/sbin/squid") and not f.is_directory:
            binary = f
        elif f.path.endswith("/usr/lib/squid") and f.is_directory:
            helpers = f
        elif f.path.endswith("/usr/share/squid") and f.is_directory:
            data = f
    if not (binary and helpers and data):
        fail("%s: %s must provide usr/sbin/squid and the directories usr/lib/squid, usr/share/squid" % (
            ctx.label,
            ctx.attr.install.label,
        ))
    return binary, helpers, data

def _layout_args(ctx, output_flag, output):
    binary, helpers, data = _install_parts(ctx)
    args = ctx.actions.args()
    args.add("--squid", binary.path)
    args.add("--helpers", helpers.path)
    args.add("--data", data.path)
    args.add(output_flag, output.path)
    return args, [binary, helpers, data]

def _squid_rootfs_impl(ctx):
    out = ctx.actions.declare_directory(ctx.label.name)
    args, inputs = _layout_args(ctx, "--out-dir", out)
    ctx.actions.run(
        executable = ctx.executable._layout_tool,
        arguments = [args],
        inputs = inputs,
        outputs = [out],
        # A cheap copy, and never from a cache (no-cache: "no-remote-cache" still uses the
        # disk cache): files Bazel takes from the disk cache come back r-xr--r--, and a Squid
        # started as root switches to its own user, who must be able to run the helpers
        # (Permission denied otherwise). Built here, Bazel leaves the tree r-xr-xr-x.
        execution_requirements = {"no-cache": "1"},
        mnemonic = "SquidRootfs",
        progress_message = "Laying out the Squid root tree %{label}",
    )
    return [DefaultInfo(files = depset([out]), runfiles = ctx.runfiles(files = [out]))]

def _squid_layer_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    args, inputs = _layout_args(ctx, "--out-tar", out)
    ctx.actions.run(
        executable = ctx.executable._layout_tool,
        arguments = [args],
        inputs = inputs,
        outputs = [out],
        mnemonic = "SquidLayer",
        progress_message = "Writing the Squid image layer %{label}",
    )
    return [DefaultInfo(files = depset([out]))]

def _squid_part_impl(ctx):
    binary, helpers, data = _install_parts(ctx)
    picked = {"squid": binary, "helpers": helpers, "data": data}[ctx.attr.part]
    return [DefaultInfo(files = depset([picked]), runfiles = ctx.runfiles(files = [picked]))]

_COMMON_ATTRS = {
    "install": attr.label(
        mandatory = True,
        doc = "The configure_make target that installed Squid (DESTDIR layout).",
    ),
}

_TOOL_ATTRS = dict(_COMMON_ATTRS)
_TOOL_ATTRS["_layout_tool"] = attr.label(
    default = "//squid:layout_tool",
    executable = True,
    cfg = "exec",
)

squid_rootfs = rule(
    implementation = _squid_rootfs_impl,
    attrs = _TOOL_ATTRS,
    doc = "A directory laid out like the image root (usr/sbin/squid, usr/lib/squid, usr/share/squid).",
)

squid_layer = rule(
    implementation = _squid_layer_impl,
    attrs = _TOOL_ATTRS,
    doc = "The same tree as a reproducible tar layer (root-owned, fixed mtime, sorted).",
)

_PART_ATTRS = dict(_COMMON_ATTRS)
_PART_ATTRS["part"] = attr.string(mandatory = True, values = ["squid", "helpers", "data"])

squid_part = rule(
    implementation = _squid_part_impl,
    attrs = _PART_ATTRS,
    doc = "One part of the install: the squid binary, the helpers dir or the data dir.",
)
