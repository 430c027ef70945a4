"""image_checks: the six image checks (image/checks/*_test.py) on one built image."""

load("//tools/pytest:defs.bzl", "pytest_test")

CHECKS = [
    "filesystem",
    "config",
    # every path of the built layers against image/layers/allowlist.txt
    "contents",
    "elf_deps",
    "packages",
    "sbom",
]

def image_checks(image, sbom, image_arm64, sbom_arm64, manifests, locks):
    """<check>_test and <check>_arm64_test for each check: the build host's image and linux/arm64's.

    The arm64 ones build Squid with //tools/cc's cross GCC: tagged "arm64", so
    `--build_tag_filters=-arm64 --test_tag_filters=-arm64` leaves them out on a host without it.

    Args:
      image: the OCI layout target.
      sbom: the image's SPDX SBOM target; its CycloneDX twin is `sbom`_cyclonedx, and
        `sbom`_cyclonedx_arm64 the arm64 one's (image/parts:defs.bzl image_sbom).
      image_arm64: the same through the linux/arm64 transition.
      sbom_arm64: its SBOM.
      manifests: the package manifests (trixie.yaml, ...) whose packages the image holds, all of them.
      locks: their locks, in the same order.
    """
    _checks("", image, sbom, sbom + "_cyclonedx", manifests, locks, [])
    _checks("_arm64", image_arm64, sbom_arm64, sbom + "_cyclonedx_arm64", manifests, locks, ["arm64"])

def _checks(suffix, image, sbom, cyclonedx, manifests, locks, tags):
    data = [image, sbom, cyclonedx, "//image/parts:image_config_json"] + manifests + locks
    for check in CHECKS:
        pytest_test(
            name = check + suffix + "_test",
            size = "medium",
            srcs = ["//image/checks:%s_test.py" % check],
            data = data,
            env = {
                "CEPHALOPROXY_IMAGE_LAYOUT": "$(rootpath %s)" % image,
                "CEPHALOPROXY_IMAGE_MANIFEST": " ".join(["$(rootpath %s)" % m for m in manifests]),
                "CEPHALOPROXY_IMAGE_LOCK": " ".join(["$(rootpath %s)" % lock for lock in locks]),
                "CEPHALOPROXY_IMAGE_SBOM": "$(rootpath %s)" % sbom,
                "CEPHALOPROXY_IMAGE_SBOM_CYCLONEDX": "$(rootpath %s)" % cyclonedx,
                "CEPHALOPROXY_IMAGE_CONFIG": "$(rootpath //image/parts:image_config_json)",
            },
            tags = tags,
            deps = [
                "//image/checks:built_image",
                "//image/checks:image_reader",
                "//image/layers:allowlist",
                "//squid:elf_check",
            ],
        )
