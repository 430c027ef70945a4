"""for_arm64: a target's outputs built for linux/arm64, whatever the build host is."""

load("@bazel_lib//lib:transitions.bzl", "platform_transition_filegroup")

def for_arm64(name, src):
    """`src` through a transition to //tools/platforms:linux_arm64, tagged "arm64".

    The tag lets `--build_tag_filters=-arm64 --test_tag_filters=-arm64` leave arm64 out on a
    host without the cross compiler (docs/building.md "Platforms").
    """
    platform_transition_filegroup(
        name = name,
        srcs = [src],
        tags = ["arm64"],
        target_platform = "//tools/platforms:linux_arm64",
    )
