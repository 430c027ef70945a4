"""python_package_files: one package's Python sources, as the py_library graph knows them.

The image copies the runtime package into /usr/lib/cephaloproxy/<package>/. Listing its modules
by hand next to the graph that already knows them let a new module go missing from the image;
this rule takes them from the transitive sources of the binaries the image runs instead.
"""

load("@rules_python//python:defs.bzl", "PyInfo")

def _in_package(source, package):
    """A module directly in package (not a subpackage, not another package)."""
    relative = source.short_path[len(package):]
    return source.short_path.startswith(package) and "/" not in relative

def _python_package_files_impl(ctx):
    package = ctx.label.package + "/"

    # Only this package's own modules: the interpreter brings the standard library, and the
    # runtime has no other dependency (standard library only).
    files = {
        source: None
        for dep in ctx.attr.deps
        for source in dep[PyInfo].transitive_sources.to_list()
        if _in_package(source, package)
    }
    if not files:
        fail("%s: no Python sources of package %s in deps %s" % (ctx.label, ctx.label.package, ctx.attr.deps))
    return [DefaultInfo(files = depset(sorted(files.keys(), key = lambda f: f.short_path)))]

python_package_files = rule(
    implementation = _python_package_files_impl,
    doc = "The .py files of this BUILD file's package that deps (py_library/py_binary) import, transitively.",
    attrs = {
        "deps": attr.label_list(
            providers = [PyInfo],
            doc = "the libraries whose transitive sources are the package",
        ),
    },
)
