"""Reproducible image layers written by //image/layers:layer_builder.

image_layer: files, directories and symlinks with explicit owners and modes
(the entrypoint, config dirs, Squid's runtime dirs).
python_runtime_layer: the interpreter of the resolved Python toolchain, so the
image ships exactly the interpreter that runs `bazel test`, without what cannot
run there or is not needed (image/layers/python_runtime.exclude).
gzip_layer: a tar layer from elsewhere (//squid:layer), gzipped so pulls
download less, optionally without the paths `exclude` drops.
deb_layer: Debian .debs as a distroless layer (image/layers/deb_layer.py); with
`interpreter` it is a Python runtime layer (the CI image's Debian python3.13).
ca_bundle: the CA bundle from the ca-certificates .deb (image/layers/ca_bundle.py).

Which paths go is decided by image/layers/layer_builder.py (path_rules
syntax), so the logic is unit-tested offline; //image:contents_test checks the
result against image/layers/allowlist.txt.
"""

_BUILDER = attr.label(
    default = "//image/layers:layer_builder",
    executable = True,
    cfg = "exec",
)

def _relative(path):
    """Image paths in the spec are relative to /."""
    return path.lstrip("/")

def _write_layer(ctx, entries, inputs, exclude = None, exclude_prefix = "", link_duplicates = False, bytecode = None):
    spec = ctx.actions.declare_file(ctx.label.name + ".spec.json")
    output = ctx.actions.declare_file(ctx.label.name + ".tar.gz")
    ctx.actions.write(spec, json.encode({
        "mtime": 0,
        "exclude_rules": exclude.path if exclude else "",
        "exclude_prefix": exclude_prefix,
        "link_duplicates": link_duplicates,
        "bytecode": bytecode,
        "entries": entries,
    }))
    ctx.actions.run(
        executable = ctx.executable._builder,
        arguments = [spec.path, output.path],
        inputs = depset([spec] + ([exclude] if exclude else []), transitive = [inputs]),
        outputs = [output],
        mnemonic = "ImageLayer",
        progress_message = "Writing image layer %{label}",
    )
    return output

def _parse_owner_mode(path, value):
    parts = value.split(":")
    if len(parts) != 3:
        fail("dirs[%r] = %r: write it as 'UID:GID:MODE', e.g. '1000:0:0770'" % (path, value))
    return int(parts[0]), int(parts[1]), parts[2]

def _image_layer_impl(ctx):
    entries = []
    inputs = []
    for target, destination in ctx.attr.files.items():
        files = target[DefaultInfo].files.to_list()
        if destination.endswith("/"):
            for f in files:
                entries.append({"type": "file", "path": _relative(destination + f.basename), "src": f.path, "mode": "auto"})
        elif len(files) == 1:
            # Bazel leaves generated files 0555, so "auto" would make them executable.
            mode = ctx.attr.file_modes.get(destination, "auto")
            entries.append({"type": "file", "path": _relative(destination), "src": files[0].path, "mode": mode})
        else:
            fail("files: %s has %d files; end its destination with '/' to copy them into a directory" % (target.label, len(files)))
        inputs.extend(files)

    for path, value in ctx.attr.dirs.items():
        uid, gid, mode = _parse_owner_mode(path, value)
        entries.append({"type": "dir", "path": _relative(path), "uid": uid, "gid": gid, "mode": mode})
    for path, target_path in ctx.attr.symlinks.items():
        entries.append({"type": "symlink", "path": _relative(path), "target": target_path})

    bytecode = None
    if ctx.attr.bytecode_under:
        if not ctx.attr.python_runtime:
            fail("bytecode_under needs python_runtime (the python_runtime_layer whose Python imports them)")
        bytecode = {
            "cache_tag": ctx.attr.python_runtime[PythonRuntimeLayerInfo].cache_tag,
            "under": [_relative(p) for p in ctx.attr.bytecode_under],
        }
    layer = _write_layer(ctx, entries, depset(inputs), bytecode = bytecode)
    return [DefaultInfo(files = depset([layer]))]

image_layer = rule(
    implementation = _image_layer_impl,
    doc = "A gzipped tar layer with explicit owners, modes and a fixed mtime.",
    attrs = {
        "files": attr.label_keyed_string_dict(
            allow_files = True,
            doc = "target -> image path (a path ending in '/' copies all its files into that directory)",
        ),
        "file_modes": attr.string_dict(doc = "image path of a `files` entry -> octal mode (default: 0755 if the source is executable, else 0644)"),
        "dirs": attr.string_dict(doc = "image path -> 'UID:GID:MODE'"),
        "symlinks": attr.string_dict(doc = "image path -> link target"),
        "bytecode_under": attr.string_list(doc = "image dirs whose .py files get __pycache__ bytecode for python_runtime's Python"),
        "python_runtime": attr.label(doc = "the python_runtime_layer whose interpreter imports bytecode_under"),
        "_builder": _BUILDER,
    },
)

_PY_TOOLCHAIN = "@rules_python//python:toolchain_type"

PythonRuntimeLayerInfo = provider(
    doc = "Where python_runtime_layer placed the interpreter, and its bytecode tag.",
    fields = {
        "interpreter": "absolute image path of the interpreter",
        "cache_tag": "the interpreter's sys.implementation.cache_tag (cpython-313): names its .pyc files",
    },
)

def _cache_tag(runtime):
    version = runtime.interpreter_version_info
    return "cpython-%d%d" % (version.major, version.minor)

def _python_runtime_layer_impl(ctx):
    toolchain = ctx.toolchains[_PY_TOOLCHAIN]
    runtime = getattr(toolchain, "py3_runtime", None)
    if runtime == None:
        fail("The resolved Python toolchain has no py3_runtime; register a Python 3 toolchain.")
    if runtime.interpreter == None:
        fail(("The resolved Python toolchain uses a platform interpreter (%s), which cannot be " +
              "copied into the image. Register an in-build runtime (rules_python's " +
              "python.toolchain does) for the image's target platform.") % runtime.interpreter_path)

    # The runtime's root is the directory above bin/: python-build-standalone
    # and Debian's layout both keep lib/pythonX.Y beside bin/, so installing
    # the root at a prefix keeps the interpreter's sys.prefix lookup working.
    interpreter = runtime.interpreter
    if interpreter.dirname.split("/")[-1] != "bin":
        fail("Python interpreter %s is not in a bin/ directory; cannot tell the runtime's root" % interpreter.path)
    root = interpreter.dirname.rpartition("/")[0]
    prefix = ctx.attr.prefix.rstrip("/")

    files = depset([interpreter], transitive = [runtime.files])
    entries = []
    for f in files.to_list():
        if not f.path.startswith(root + "/"):
            fail("Python runtime file %s is outside the runtime root %s" % (f.path, root))
        relative = f.path[len(root) + 1:]

        # Stdlib modules are imported, never executed: 0644 whatever the
        # archive says, so no module's `#!` line is an executable script.
        mode = "0644" if relative.startswith("lib/") and relative.endswith(".py") else "auto"
        entries.append({"type": "file", "path": _relative(prefix + "/" + relative), "src": f.path, "mode": mode})

    interpreter_image_path = prefix + "/" + interpreter.path[len(root) + 1:]
    link = ctx.attr.python3_link
    if link and link != interpreter_image_path:
        if link.rpartition("/")[0] == interpreter_image_path.rpartition("/")[0]:
            target = interpreter.basename
        else:
            target = interpreter_image_path
        entries = [e for e in entries if e["path"] != _relative(link)]
        entries.append({"type": "symlink", "path": _relative(link), "target": target})

    # bin/python3 and bin/python3.X arrive as two identical files (Bazel
    # follows the archive's symlink): link_duplicates keeps python3.X and links
    # python3 to it.
    # The stdlib's bytecode, compiled here (layer_builder add_bytecode): the archive's own
    # __pycache__ is dropped by `exclude` (timestamp pycs of the build machine).
    cache_tag = _cache_tag(runtime)
    layer = _write_layer(
        ctx,
        entries,
        files,
        exclude = ctx.file.exclude,
        exclude_prefix = _relative(prefix),
        link_duplicates = True,
        bytecode = {"cache_tag": cache_tag, "under": [_relative(prefix + "/lib")]},
    )
    return [
        DefaultInfo(files = depset([layer])),
        PythonRuntimeLayerInfo(interpreter = interpreter_image_path, cache_tag = cache_tag),
    ]

python_runtime_layer = rule(
    implementation = _python_runtime_layer_impl,
    doc = "The resolved Python toolchain's interpreter and stdlib as an image layer.",
    attrs = {
        "prefix": attr.string(default = "/usr", doc = "image directory that receives the runtime's bin/, lib/, ..."),
        "python3_link": attr.string(default = "/usr/bin/python3", doc = "symlink to the interpreter ('' for none)"),
        "exclude": attr.label(
            allow_single_file = True,
            default = "//image/layers:python_runtime.exclude",
            doc = "filter lines (image/layers/path_rules.py) relative to the runtime root",
        ),
        "_builder": _BUILDER,
    },
    toolchains = [_PY_TOOLCHAIN],
)

def _gzip_layer_impl(ctx):
    output = ctx.actions.declare_file(ctx.label.name + ".tar.gz")
    inputs = [ctx.file.src]
    if ctx.file.exclude:
        arguments = ["--filter", ctx.file.exclude.path, ctx.file.src.path, output.path]
        inputs.append(ctx.file.exclude)
    else:
        arguments = ["--gzip", ctx.file.src.path, output.path]
    ctx.actions.run(
        executable = ctx.executable._builder,
        arguments = arguments,
        inputs = inputs,
        outputs = [output],
        mnemonic = "ImageLayerGzip",
        progress_message = "Compressing image layer %{label}",
    )
    return [DefaultInfo(files = depset([output]))]

gzip_layer = rule(
    implementation = _gzip_layer_impl,
    doc = "Deterministically gzips a tar layer (mtime 0, no file name), optionally filtered.",
    attrs = {
        "src": attr.label(allow_single_file = [".tar", ".tar.gz", ".tgz"], mandatory = True),
        "exclude": attr.label(
            allow_single_file = True,
            doc = "filter lines (image/layers/path_rules.py): '-GLOB' drops, '+GLOB' keeps; first match wins",
        ),
        "_builder": _BUILDER,
    },
)

_DEB_LAYER = attr.label(
    default = "//image/layers:deb_layer",
    executable = True,
    cfg = "exec",
)

def _deb_layer_impl(ctx):
    output = ctx.actions.declare_file(ctx.label.name + ".tar.gz")
    args = ctx.actions.args()
    args.add("--output", output)
    inputs = list(ctx.files.debs)
    if ctx.file.exclude:
        args.add("--exclude", ctx.file.exclude)
        inputs.append(ctx.file.exclude)
    for path, target in sorted(ctx.attr.symlinks.items()):
        args.add("--symlink", "%s=%s" % (path, target))
    for directory in ctx.attr.bytecode_under:
        args.add("--bytecode", "%s:%s" % (ctx.attr.cache_tag, directory))
    args.add_all(ctx.files.debs)
    ctx.actions.run(
        executable = ctx.executable._deb_layer,
        arguments = [args],
        inputs = inputs,
        outputs = [output],
        mnemonic = "DebLayer",
        progress_message = "Writing Debian package layer %{label}",
    )
    providers = [DefaultInfo(files = depset([output]))]
    if ctx.attr.interpreter:
        if not ctx.attr.cache_tag:
            fail("%s: interpreter needs cache_tag (the interpreter's sys.implementation.cache_tag)" % ctx.label)
        providers.append(PythonRuntimeLayerInfo(interpreter = ctx.attr.interpreter, cache_tag = ctx.attr.cache_tag))
    return providers

deb_layer = rule(
    implementation = _deb_layer_impl,
    doc = """A layer of Debian .debs (image/layers/deb_layer.py): their files merged-/usr, one
/var/lib/dpkg/status.d record per package, without what `exclude` drops. With `interpreter`
and `cache_tag` it is a Python runtime layer (PythonRuntimeLayerInfo) whose stdlib bytecode
is compiled at build time, as python_runtime_layer's.""",
    attrs = {
        "debs": attr.label_list(allow_files = [".deb"], mandatory = True),
        "exclude": attr.label(allow_single_file = True, doc = "filter lines (image/layers/path_rules.py) relative to /"),
        "symlinks": attr.string_dict(doc = "image path -> link target"),
        "bytecode_under": attr.string_list(doc = "image dirs whose .py files get __pycache__ bytecode"),
        "cache_tag": attr.string(doc = "the image's Python's sys.implementation.cache_tag (cpython-313)"),
        "interpreter": attr.string(doc = "image path of the Python interpreter these .debs hold"),
        "_deb_layer": _DEB_LAYER,
    },
)

def _ca_bundle_impl(ctx):
    output = ctx.actions.declare_file(ctx.label.name + ".crt")
    ctx.actions.run(
        executable = ctx.executable._ca_bundle,
        arguments = [ctx.file.deb.path, output.path],
        inputs = [ctx.file.deb],
        outputs = [output],
        mnemonic = "CaBundle",
        progress_message = "Writing the CA bundle %{label}",
    )
    return [DefaultInfo(files = depset([output]))]

ca_bundle = rule(
    implementation = _ca_bundle_impl,
    doc = "/etc/ssl/certs/ca-certificates.crt from the ca-certificates .deb (image/layers/ca_bundle.py).",
    attrs = {
        "deb": attr.label(allow_single_file = [".deb"], mandatory = True),
        "_ca_bundle": attr.label(default = "//image/layers:ca_bundle", executable = True, cfg = "exec"),
    },
)
