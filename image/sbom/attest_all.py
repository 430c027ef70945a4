"""Runs cosign_attest launchers one after another with the caller's arguments (//image:attest).

rules_oci's cosign_attest attaches one predicate and knows the types slsaprovenance, link,
spdx, vuln and custom. //image:attest attaches two, the SPDX and the CycloneDX SBOM: each
launcher runs with the caller's arguments (--repository, --yes, --key, ...) and then
`--type <cosign type>`, which wins over the launcher's fixed --type because cosign, like every
cobra/pflag program, keeps a repeated flag's last value. spdxjson and cyclonedx are what
`cosign attest --type` calls the two SBOM predicates (https://spdx.dev/Document,
https://cyclonedx.org/bom), the types `cosign verify-attestation --type` and Trivy's
`--sbom-sources oci` look for.

    attest_all.py COSIGN_TYPE=RLOCATIONPATH... -- [cosign_attest arguments...]
"""

from __future__ import annotations

import os
import subprocess
import sys

from python.runfiles import runfiles as bazel_runfiles


def parse(argv: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """([(cosign type, launcher rlocationpath)...], the caller's arguments)."""
    if "--" not in argv:
        raise SystemExit(
            "attest_all: expected TYPE=LAUNCHER... -- ARGS (see image/BUILD.bazel's :attest)"
        )
    split = argv.index("--")
    launchers = []
    for spec in argv[:split]:
        kind, sep, path = spec.partition("=")
        if not sep or not kind or not path:
            raise SystemExit(f"attest_all: {spec!r} is not TYPE=LAUNCHER")
        launchers.append((kind, path))
    return launchers, argv[split + 1 :]


def main(argv: list[str]) -> int:
    launchers, arguments = parse(argv)
    runfiles = bazel_runfiles.Create()
    environment = dict(os.environ, **runfiles.EnvVars())
    for kind, path in launchers:
        launcher = runfiles.Rlocation(path)
        if not launcher or not os.path.exists(launcher):
            print(
                f"attest_all: {path} is not in the runfiles; is it in :attest's data?",
                file=sys.stderr,
            )
            return 1
        print(f"attest_all: attaching the {kind} predicate", file=sys.stderr)
        code = subprocess.call([launcher, *arguments, "--type", kind], env=environment)
        if code != 0:
            print(
                f"attest_all: the {kind} attestation failed (exit {code}); the ones before it are attached",
                file=sys.stderr,
            )
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
