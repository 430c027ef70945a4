"""debian_debs: one http_file per .deb that a Debian package lock pins, plus a hub repository.

The lock is the rules_distroless format (image/trixie.lock.json): packages with arch, name,
version, sha256 and urls. Our own extension, not rules_distroless's, so that the offline build
(--config=debian, which cannot reach rules_distroless) gets the very same .debs by sha256:
tools/debian-bazel/run puts them into Bazel's repository cache before it cuts the network, the
way it does for the Squid tarball. Every .deb is its own repository, so a build fetches only
the ones its targets use.

    debian_debs = use_extension("//image/debs:extensions.bzl", "debian_debs")
    debian_debs.lock(name = "trixie_debs", lock = "//image/offline:trixie.lock.json")
    use_repo(debian_debs, "trixie_debs")

@trixie_debs//:amd64 is the arch's .debs in lock order, @trixie_debs//:amd64_libc6 one of them.
"""

load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_file")

def _sanitize(text):
    """A repository or target name from a package name (libstdc++6 -> libstdc__6)."""
    return "".join([c if c.isalnum() or c in "-_." else "_" for c in text.elems()])

def deb_repository_name(hub, arch, package):
    return "%s_%s_%s" % (hub, arch, _sanitize(package))

def _hub_impl(repository_ctx):
    lines = ['package(default_visibility = ["//visibility:public"])', ""]
    for arch, packages in repository_ctx.attr.packages.items():
        for package in packages:
            lines.append('alias(name = "%s_%s", actual = "@%s//file")' % (
                arch,
                _sanitize(package),
                deb_repository_name(repository_ctx.attr.hub, arch, package),
            ))
        lines.append('filegroup(name = "%s", srcs = [%s])' % (
            arch,
            ", ".join(['":%s_%s"' % (arch, _sanitize(p)) for p in packages]),
        ))
    repository_ctx.file("BUILD.bazel", "\n".join(lines) + "\n")

_hub = repository_rule(
    implementation = _hub_impl,
    attrs = {
        "hub": attr.string(mandatory = True),
        "packages": attr.string_list_dict(doc = "arch -> package names in lock order"),
    },
)

def _debian_debs_impl(module_ctx):
    for module in module_ctx.modules:
        for lock_tag in module.tags.lock:
            lock = json.decode(module_ctx.read(lock_tag.lock))
            packages = {}
            for package in lock["packages"]:
                arch, name = package["arch"], package["name"]
                packages.setdefault(arch, []).append(name)
                http_file(
                    name = deb_repository_name(lock_tag.name, arch, name),
                    urls = package["urls"],
                    sha256 = package["sha256"],
                    downloaded_file_path = _sanitize(name) + ".deb",
                )
            _hub(name = lock_tag.name, hub = lock_tag.name, packages = packages)

_lock = tag_class(attrs = {
    "name": attr.string(mandatory = True, doc = "the hub repository's name"),
    "lock": attr.label(mandatory = True, doc = "a rules_distroless-format lock (JSON)"),
})

debian_debs = module_extension(
    implementation = _debian_debs_impl,
    tag_classes = {"lock": _lock},
    doc = "One http_file per locked .deb (by sha256), and a hub repository naming them per arch.",
)
