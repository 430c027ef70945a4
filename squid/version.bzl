"""The one place that pins the Squid release //squid compiles.

How to bump (e.g. to 7.8):
  1. Set SQUID_VERSION below and the tag in SQUID_URLS follows (SQUID_7_8).
  2. Download the tarball from the upstream release page, verify its PGP
     signature (squid-X.Y.tar.xz.asc, key in the release notes), and put
     `sha256sum squid-X.Y.tar.xz` into SQUID_SHA256. Debian's pool carries the
     identical file as squid_X.Y.orig.tar.xz once Debian packages that release;
     until then the upstream URL alone serves.
  3. `bazel test //squid/...`: the version test reads SQUID_VERSION from this
     file, so it follows automatically. Read the release notes for removed or
     renamed ./configure flags (squid/configure_flags.bzl).
"""

SQUID_VERSION = "7.7"

SQUID_SHA256 = "e3bd613b91b1c498ec2992276063342a85cd6edddd5521294e04f44bc055da9b"

SQUID_URLS = [
    # Upstream release first.
    "https://github.com/squid-cache/squid/releases/download/SQUID_{tag}/squid-{version}.tar.xz".format(
        tag = SQUID_VERSION.replace(".", "_"),
        version = SQUID_VERSION,
    ),
    # Debian's pool: the same signed upstream tarball, as a mirror.
    "https://deb.debian.org/debian/pool/main/s/squid/squid_{version}.orig.tar.xz".format(
        version = SQUID_VERSION,
    ),
]

SQUID_STRIP_PREFIX = "squid-" + SQUID_VERSION

# Scanners' names for this release, used by the binaries' package note (//squid:package_note.bzl)
# and both SBOMs (//image/sbom): NVD's CPE 2.3 product, and a generic purl (Squid is compiled from
# the upstream release; no package registry serves it).
SQUID_CPE = "cpe:2.3:a:squid-cache:squid:%s:*:*:*:*:*:*:*" % SQUID_VERSION

SQUID_PURL = "pkg:generic/squid-cache/squid@%s" % SQUID_VERSION
