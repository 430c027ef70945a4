"""cosign for //image:sign and //image:attest (rules_oci's cosign rules).

rules_oci registers crane and regctl itself but leaves cosign to the user;
this extension creates its pinned per-platform downloads (rules_oci's
cosign/private/versions.bzl: binary and sha256) and the toolchains repo that
MODULE.bazel registers. Only `bazel run //image:sign|attest` fetches the
binary; nothing else resolves the cosign toolchain type.
"""

load("@rules_oci//cosign:repositories.bzl", "cosign_register_toolchains")

def _cosign_impl(_module_ctx):
    cosign_register_toolchains(name = "oci_cosign", register = False)

cosign = module_extension(implementation = _cosign_impl)
