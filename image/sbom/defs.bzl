"""spdx_sbom and cyclonedx_sbom: the image's SBOMs (SPDX 2.3 / CycloneDX 1.6 JSON) from its own inputs.

Both rules write the facts Starlark knows (the project; Squid's version, hash, URLs, CPE and
purl from //squid:version.bzl and its configure flags; the resolved Python toolchain's
interpreter_version_info) to a JSON file and run their generator on it with the
rules_distroless lock, the toolchain's patchlevel.h and the stamp file. The generators share
one core (inventory.py), so the two documents name the same things the same way; see
spdx_sbom.py and cyclonedx_sbom.py for each document's shape.
"""

load("@bazel_skylib//rules:common_settings.bzl", "BuildSettingInfo")
load("@rules_python//python:defs.bzl", "PyRuntimeInfo")
load("//squid:version.bzl", "SQUID_CPE", "SQUID_PURL")

_PY_TOOLCHAIN = "@rules_python//python:toolchain_type"

def _python_runtime(ctx):
    if ctx.attr.python_runtime:
        return ctx.attr.python_runtime[PyRuntimeInfo]
    toolchain = ctx.toolchains[_PY_TOOLCHAIN]
    runtime = getattr(toolchain, "py3_runtime", None) if toolchain else None
    if runtime == None:
        fail("%s: the resolved Python toolchain has no py3_runtime; register a Python 3 toolchain." % ctx.label)
    return runtime

def _version_info(runtime):
    """'X.Y.Z' from the provider's interpreter_version_info, '' when it has none."""
    info = getattr(runtime, "interpreter_version_info", None)
    if not info or not getattr(info, "micro", None):
        return ""
    version = "%s.%s.%s" % (info.major, info.minor, info.micro)
    level = getattr(info, "releaselevel", "final")
    if level and level != "final":
        version += {"alpha": "a", "beta": "b", "candidate": "rc"}.get(level, level) + str(info.serial)
    return version

def _sbom_impl(ctx):
    # python_version given: the image's Python is not the toolchain's (the offline CI image's
    # Debian python3.13), so the toolchain is not described.
    runtime = None if ctx.attr.python_version else _python_runtime(ctx)
    runtime_files = runtime.files.to_list() if runtime and runtime.files else []
    patchlevel = [
        f
        for f in runtime_files
        if f.basename == "patchlevel.h" and f.dirname.split("/")[-1].startswith("python3") and
           f.dirname.split("/")[-2] == "include"
    ]
    if len(patchlevel) > 1:
        fail("%s: the Python toolchain has several patchlevel.h: %s" % (ctx.label, [f.path for f in patchlevel]))

    facts = ctx.actions.declare_file(ctx.label.name + ".facts.json")
    ctx.actions.write(facts, json.encode({
        "project": {
            "name": ctx.attr.project_name,
            "source_url": ctx.attr.source_url[BuildSettingInfo].value.strip(),
            "license": ctx.attr.license,
            "supplier": ctx.attr.supplier,
        },
        "squid": {
            "version": ctx.attr.squid_version,
            "sha256": ctx.attr.squid_sha256,
            "urls": ctx.attr.squid_urls,
            "cpe": ctx.attr.squid_cpe,
            "purl": ctx.attr.squid_purl,
            "configure_flags": ctx.attr.squid_configure_flags,
            "make_args": ctx.attr.squid_make_args,
        },
        "python": {
            "version_info": ctx.attr.python_version or _version_info(runtime),
            "interpreter": ctx.attr.python_interpreter,
            "comment": ctx.attr.python_comment,
        },
    }))

    output = ctx.actions.declare_file(ctx.attr.out or ctx.label.name + ctx.attr._suffix)
    args = ctx.actions.args()
    args.add("--lock", ctx.file.lock)
    args.add_all(ctx.files.extra_locks, before_each = "--lock")
    args.add("--arch", ctx.attr.arch)
    args.add("--facts", facts)
    args.add("--output", output)
    inputs = [ctx.file.lock, facts] + ctx.files.extra_locks
    if patchlevel:
        args.add("--python-patchlevel", patchlevel[0])
        inputs.append(patchlevel[0])
    if ctx.file.stamp:
        args.add("--stamp", ctx.file.stamp)
        inputs.append(ctx.file.stamp)
    ctx.actions.run(
        executable = ctx.executable._generator,
        arguments = [args],
        inputs = inputs,
        outputs = [output],
        mnemonic = ctx.attr._mnemonic,
        progress_message = "Writing the SBOM %{label}",
    )
    return [DefaultInfo(files = depset([output]))]

_ATTRS = {
    "lock": attr.label(allow_single_file = [".json"], mandatory = True, doc = "the rules_distroless lock (image/trixie.lock.json)"),
    "extra_locks": attr.label_list(allow_files = [".json"], doc = "more locks of the same format whose packages the image holds too"),
    "python_version": attr.string(doc = "the image's exact Python version when it is not the toolchain's (the offline CI image's Debian python3.13)"),
    "python_comment": attr.string(doc = "what the SBOM says the Python package is (default: the toolchain's CPython)"),
    "arch": attr.string(mandatory = True, doc = "the image's Debian architecture (amd64, arm64)"),
    "stamp": attr.label(allow_single_file = True, doc = "version=, revision=, created= lines (stamped or their unstamped values)"),
    "out": attr.string(doc = "output file name (default NAME.spdx.json / NAME.cdx.json)"),
    "project_name": attr.string(mandatory = True),
    "source_url": attr.label(
        default = "//image/labels:source",
        providers = [BuildSettingInfo],
        doc = "the builder's repository URL (--//image/labels:source); empty: none is claimed",
    ),
    "license": attr.string(mandatory = True, doc = "SPDX licence expression of the project"),
    "supplier": attr.string(default = "CephaloProxy"),
    "squid_version": attr.string(mandatory = True),
    "squid_sha256": attr.string(mandatory = True),
    "squid_urls": attr.string_list(mandatory = True),
    "squid_cpe": attr.string(default = SQUID_CPE, doc = "Squid's CPE 2.3 (version.bzl; must name squid_version)"),
    "squid_purl": attr.string(default = SQUID_PURL, doc = "Squid's purl (version.bzl; must name squid_version)"),
    "squid_configure_flags": attr.string_list(),
    "squid_make_args": attr.string_list(),
    "python_interpreter": attr.string(default = "/usr/bin/python3", doc = "where the image has the interpreter"),
    "python_runtime": attr.label(
        providers = [PyRuntimeInfo],
        doc = "a py_runtime to describe instead of the resolved toolchain's (tests)",
    ),
}

def _sbom_rule(doc, generator, suffix, mnemonic):
    return rule(
        implementation = _sbom_impl,
        doc = doc,
        attrs = _ATTRS | {
            "_generator": attr.label(default = generator, executable = True, cfg = "exec"),
            "_suffix": attr.string(default = suffix),
            "_mnemonic": attr.string(default = mnemonic),
        },
        toolchains = [config_common.toolchain_type(_PY_TOOLCHAIN, mandatory = False)],
    )

spdx_sbom = _sbom_rule(
    "The image's SPDX 2.3 JSON SBOM: Debian packages of the lock, Squid, the toolchain's CPython, the project.",
    "//image/sbom:spdx_sbom",
    ".spdx.json",
    "SpdxSbom",
)

# Where Trivy and Syft look for CycloneDX files in an image: *.cdx.json.
cyclonedx_sbom = _sbom_rule(
    "The image's CycloneDX 1.6 JSON SBOM, from the same inventory as spdx_sbom.",
    "//image/sbom:cyclonedx_sbom",
    ".cdx.json",
    "CycloneDxSbom",
)

def sboms(name, **kwargs):
    """`name` (SPDX 2.3, NAME.spdx.json) and `name`_cyclonedx (CycloneDX 1.6, NAME_cyclonedx.cdx.json), from the same arguments."""
    spdx_sbom(name = name, **kwargs)
    cyclonedx_sbom(name = name + "_cyclonedx", **kwargs)
