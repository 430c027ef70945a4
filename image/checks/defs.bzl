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

def image_checks(suffix, image, sbom, manifests, locks, tags = [], env = {}):
    """<check><suffix>_test for each check, reading `image` (an OCI layout) and `sbom`.

    Args:
      suffix: appended to each test's name ("", "_arm64").
      image: the OCI layout target.
      sbom: the image's SPDX SBOM target.
      manifests: the package manifests (trixie.yaml, ...) whose packages the image holds, all of them.
      locks: their locks, in the same order.
      tags: tags of every test ("arm64" for the cross-built image).
      env: more environment (e.g. the image's expected config).
    """
    data = [image, sbom, "//image/parts:image_config_json"] + manifests + locks
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
                "CEPHALOPROXY_IMAGE_CONFIG": "$(rootpath //image/parts:image_config_json)",
            } | env,
            tags = tags,
            deps = [
                "//image/checks:built_image",
                "//image/checks:image_reader",
                "//image/layers:allowlist",
                "//squid:elf_check",
            ],
        )
