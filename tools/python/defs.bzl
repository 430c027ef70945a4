"""python_package_files: one package's Python sources, as the py_library graph knows them.

The image copies the runtime package into /usr/lib/cephaloproxy/<package>/. Listing its modules
by hand next to the graph that already knows them let a new module go missing from the image;
this rule takes them from the transitive sources of the binaries the image runs instead.
"""

load("@rules_python//python:defs.bzl", "PyInfo")


def _python_package_files_impl(ctx):
    package = ctx.label.package + "/"
    files = []
    for dep in ctx.attr.deps:
        for source in dep[PyInfo].transitive_sources.to_list():
            # Only this package's own modules: the interpreter brings the standard library, and
            # the runtime has no other dependency (standard library only).
            if source.short_path.startswith(package) and source.short_path.count(
                "/"
            ) == package.count("/"):
                files.append(source)
    if not files:
        fail(
            "%s: no Python sources of package %s in deps %s"
            % (ctx.label, ctx.label.package, ctx.attr.deps)
        )
    return [DefaultInfo(files=depset(sorted(files, key=lambda f: f.short_path)))]


python_package_files = rule(
    implementation=_python_package_files_impl,
    doc="The .py files of this BUILD file's package that deps (py_library/py_binary) import, transitively.",
    attrs={
        "deps": attr.label_list(
            providers=[PyInfo], doc="the libraries whose transitive sources are the package"
        ),
    },
)
