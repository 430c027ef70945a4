"""app_layer: the entrypoint, health check, default config and runtime dirs, as one macro so
//image and the offline CI image (//image/offline) build the very same layer definition; only
the SBOM file and the Python whose bytecode it carries are theirs. image_sbom: the SBOMs (SPDX and
CycloneDX) of either, from the same project and Squid facts."""

load("//image/layers:layer.bzl", "image_layer")
load("//image/sbom:defs.bzl", "sboms")
load("//squid:configure_flags.bzl", "SQUID_CONFIGURE_FLAGS", "SQUID_MAKE_ARGS")
load("//squid:version.bzl", "SQUID_SHA256", "SQUID_URLS", "SQUID_VERSION")
load(":image_config.bzl", "SQUID_UID")

# Squid's runtime dirs: owner 1000, group 0, 0770 so any UID in group 0 can
# write them (OpenShift's arbitrary UIDs).
RUNTIME_DIRS = [
    "/var/cache/squid",
    "/var/lib/squid",
    "/var/log/squid",
    "/var/run/squid",
    "/var/spool/squid",
]

def app_layer(name, sbom, python_runtime, **kwargs):
    """The app layer: entrypoint, config, runtime dirs, both SBOMs and bytecode for the Python.

    Args:
      name: the layer's name.
      sbom: the SPDX SBOM target; `sbom`_cyclonedx is its CycloneDX twin (both under
        /usr/share/doc/cephaloproxy/).
      python_runtime: the python_runtime layer whose interpreter imports the bytecode.
      **kwargs: passed to image_layer.
    """
    image_layer(
        name = name,
        # The package's bytecode for the image's Python, compiled at build time: the image cannot
        # write it (read-only root, PYTHONDONTWRITEBYTECODE), so every start would compile it.
        bytecode_under = ["/usr/lib/cephaloproxy"],
        dirs = {d: "%d:0:0770" % SQUID_UID for d in RUNTIME_DIRS} | {
            "/etc/squid": "0:0:0755",
            "/etc/squid/conf.d": "0:0:0755",
            "/etc/squid/ssl_cert": "0:0:0755",
            "/usr/lib/cephaloproxy": "0:0:0755",
        },
        files = {
            # Where Trivy (*.spdx.json, *.cdx.json) and Syft (**/*.spdx.*, **/*.cdx.*) look for SBOMs.
            sbom: "/usr/share/doc/cephaloproxy/cephaloproxy.spdx.json",
            sbom + "_cyclonedx": "/usr/share/doc/cephaloproxy/cephaloproxy.cdx.json",
            "//entrypoint:entrypoint.py": "/usr/local/bin/entrypoint.py",
            "//entrypoint:healthcheck.py": "/usr/local/bin/healthcheck.py",
            "//entrypoint:squid.conf.default": "/etc/squid/squid.conf.default",
            # The package, found through PYTHONPATH (image_config.bzl).
            "//entrypoint:runtime_package_files": "/usr/lib/cephaloproxy/entrypoint/",
        },
        file_modes = {
            "/usr/share/doc/cephaloproxy/cephaloproxy.spdx.json": "0644",
            "/usr/share/doc/cephaloproxy/cephaloproxy.cdx.json": "0644",
        },
        python_runtime = python_runtime,
        **kwargs
    )

def image_sbom(name, lock, **kwargs):
    """The image's SBOMs: `name` (SPDX 2.3) and `name`_cyclonedx (CycloneDX 1.6), from one inventory.

    For the image's architecture, with the project's and Squid's facts (image/sbom:defs.bzl sboms).

    Args:
      name: the target's name.
      lock: the Debian base's lock (image/trixie.lock.json).
      **kwargs: what differs between the images (extra_locks, python_version, python_comment).
    """
    sboms(
        name = name,
        arch = select({
            "@platforms//cpu:arm64": "arm64",
            "@platforms//cpu:x86_64": "amd64",
        }),
        license = "GPL-2.0-or-later",
        lock = lock,
        project_name = "cephaloproxy",
        squid_configure_flags = SQUID_CONFIGURE_FLAGS,
        squid_make_args = SQUID_MAKE_ARGS,
        squid_sha256 = SQUID_SHA256,
        squid_urls = SQUID_URLS,
        squid_version = SQUID_VERSION,
        stamp = "//image/parts:sbom_stamp",
        **kwargs
    )
