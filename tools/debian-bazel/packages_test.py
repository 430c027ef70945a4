"""The package lists of the offline environment are well-formed, and the cross lists fit //tools/cc.

tools/debian-bazel/run installs packages.txt plus packages-cross-<host arch>.txt, after
`dpkg --add-architecture` of the architecture that file's `# foreign-architecture:` line names.
A foreign package of another architecture, a missing compiler, or a pin without a version
would only show up as a failed setup on a fresh CI machine.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

_HERE = Path(__file__).parent
# The other image architecture of each build host, and the triplet in its cross packages' names.
_CROSS = {"amd64": ("arm64", "aarch64-linux-gnu"), "arm64": ("amd64", "x86-64-linux-gnu")}
_PIN = re.compile(r"^(?P<name>[a-z0-9][a-z0-9+.-]*)(?::(?P<arch>[a-z0-9]+))?=(?P<version>\S+)$")


def _pins(path: Path) -> list[re.Match[str]]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    pins = [line for line in lines if line and not line.startswith("#")]
    matches = [_PIN.match(line) for line in pins]
    bad = [line for line, match in zip(pins, matches) if match is None]
    assert not bad, f"{path.name}: not name[:arch]=version: {bad}"
    return [m for m in matches if m is not None]


def test_the_base_list_pins_only_native_packages() -> None:
    pins = _pins(_HERE / "packages.txt")
    assert pins
    assert not [m.group(0) for m in pins if m.group("arch")], (
        "foreign packages belong in packages-cross-*.txt"
    )


@pytest.mark.parametrize("host", sorted(_CROSS))
def test_each_cross_list_brings_the_cross_compiler_and_the_foreign_libraries(host: str) -> None:
    path = _HERE / f"packages-cross-{host}.txt"
    foreign, triplet = _CROSS[host]
    declared = re.findall(
        r"^# foreign-architecture: *(\S+)$", path.read_text(encoding="utf-8"), re.MULTILINE
    )
    assert declared == [foreign], (
        f"{path.name} must declare `# foreign-architecture: {foreign}` once"
    )
    pins = _pins(path)
    names = {m.group("name"): m.group("arch") for m in pins}
    assert (
        names.get(f"gcc-{triplet}", "missing") is None
        and names.get(f"g++-{triplet}", "missing") is None
    )
    # Squid links the target's OpenSSL; configure --host=<triplet> asks for <triplet>-pkg-config.
    assert names.get("libssl-dev") == foreign and names.get("pkgconf") == foreign
    # libc6-dev brings libcrypt-dev natively; basic_ncsa_auth needs crypt(3) on both.
    assert names.get("libcrypt-dev") == foreign
    assert {m.group("arch") for m in pins if m.group("arch")} == {foreign}


def test_foreign_libraries_match_the_native_versions() -> None:
    # Multi-Arch: same packages must have one version across architectures, or apt refuses.
    native = {m.group("name"): m.group("version") for m in _pins(_HERE / "packages.txt")}
    for host in _CROSS:
        for match in _pins(_HERE / f"packages-cross-{host}.txt"):
            if match.group("arch") and match.group("name") in native:
                assert match.group("version") == native[match.group("name")], match.group(0)
