"""Module extension that declares the Squid source repository @squid_src.

An extension rather than a use_repo_rule() call in MODULE.bazel so that the
version and hash live only in //squid:version.bzl (MODULE.bazel cannot load
.bzl files).
"""

load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_archive")
load(":version.bzl", "SQUID_SHA256", "SQUID_STRIP_PREFIX", "SQUID_URLS")

_SOURCE_BUILD_FILE = """\
filegroup(
    name = "all_srcs",
    srcs = glob(["**"]),
    visibility = ["//visibility:public"],
)
"""

def _squid_source_impl(module_ctx):  # @unused: one fixed repository
    http_archive(
        name = "squid_src",
        urls = SQUID_URLS,
        sha256 = SQUID_SHA256,
        strip_prefix = SQUID_STRIP_PREFIX,
        build_file_content = _SOURCE_BUILD_FILE,
    )

squid_source = module_extension(
    implementation = _squid_source_impl,
    doc = "The pinned Squid release tarball (see //squid:version.bzl).",
)
