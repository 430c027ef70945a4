"""The Debian packages of the image, in the order of image/trixie.yaml.

Bazel cannot read the YAML manifest, so its package list is repeated here;
//image:packages_test fails when the two, the lock or the image's
/var/lib/dpkg/status.d disagree.
"""

PACKAGES = [
    "base-files",
    "netbase",
    "tzdata",
    "ca-certificates",
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "libssl3t64",
    "zlib1g",
    "libzstd1",
    "libcrypt1",
]
