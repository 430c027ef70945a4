"""pytest_test: one test file, one py_test target, run by pytest."""

load("@rules_python//python:defs.bzl", "py_test")

_MAIN = "//tools/pytest:pytest_main.py"

def pytest_test(name, srcs, deps = [], args = [], data = [], **kwargs):
    """A py_test that runs a single pytest file.

    Args:
      name: target name, conventionally the file name without ".py".
      srcs: exactly one test file.
      deps: py_library deps of the test.
      args: extra pytest arguments.
      data: runtime data (conftest.py is added so plain pytest and Bazel agree).
      **kwargs: passed to py_test (env, tags, size, timeout, ...).
    """
    if len(srcs) != 1:
        fail("pytest_test %s: give exactly one test file in srcs, got %s" % (name, srcs))
    py_test(
        name = name,
        srcs = srcs + [_MAIN],
        main = _MAIN,
        args = ["$(rootpath %s)" % srcs[0]] + args,
        data = data + ["//:conftest.py"],
        # //tools/pytest:pytest is the seam: pytest from the pip hub online,
        # Debian's python3-pytest offline (--config=debian).
        deps = deps + ["//tools/pytest:pytest"],
        **kwargs
    )
