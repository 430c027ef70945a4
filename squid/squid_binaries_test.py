"""The built binaries start on Debian 13 and the layer has the image's layout.

ELF requirements are read with squid/elf_check.py (pure Python). The ceilings
are what Debian 13 (trixie) provides: glibc 2.41, GCC 14's libstdc++
(GLIBCXX_3.4.33, CXXABI_1.3.15) and OpenSSL 3.5 (OPENSSL_3.5.0).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from squid.elf_check import (
    EM_AARCH64,
    EM_X86_64,
    DynamicRequirements,
    read_dynamic_requirements,
    version_at_most,
)
from squid.squid_under_test import SquidLayout, expected_arch, resolve_runfile, squid_under_test

TRIXIE_CEILINGS = {
    "GLIBC_": "GLIBC_2.41",
    "GLIBCXX_": "GLIBCXX_3.4.33",
    "CXXABI_": "CXXABI_1.3.15",
    "OPENSSL_": "OPENSSL_3.5.0",
}

# e_machine -> the dynamic loader's file name on that architecture.
_LOADERS = {62: "ld-linux-x86-64.so.2", 183: "ld-linux-aarch64.so.1"}

# Exactly what each binary needs, and why (plus the dynamic loader, below).
# libstdc++ and libgcc_s are absent: they are linked in (SQUID_LINKOPTS in configure_flags.bzl).
_EXPECTED_NEEDED = {
    # Debian's OpenSSL (libssl3t64) for TLS; libm for fmod() & co.
    "usr/sbin/squid": {"libssl.so.3", "libcrypto.so.3", "libm.so.6", "libc.so.6"},
    # Only libcrypto: it mints certificates but speaks no TLS itself.
    "usr/lib/squid/security_file_certgen": {"libcrypto.so.3", "libc.so.6"},
    # crypt(3) for htpasswd hashes: libcrypt1 must be in the image.
    "usr/lib/squid/basic_ncsa_auth": {"libcrypt.so.1", "libc.so.6"},
}

# Fragments of build-sandbox paths; none may be baked into a shipped file.
SANDBOX_MARKERS = (
    b"/execroot/",
    b"bazel-out/",
    b"/sandbox/",
    b".build_tmpdir",
    b"_main~squid_source",
)


@pytest.fixture(scope="module")
def layout() -> SquidLayout:
    found = squid_under_test()
    if found.is_system:
        pytest.skip(
            "checks the Squid //squid builds; CEPHALOPROXY_SQUID_ROOT is unset or '/' (system Squid)"
        )
    return found


def requirements(layout: SquidLayout, relative: str) -> DynamicRequirements:
    return read_dynamic_requirements(layout.root / relative)


_MACHINES = {"amd64": EM_X86_64, "arm64": EM_AARCH64}


@pytest.mark.parametrize(
    "relative",
    sorted(_EXPECTED_NEEDED) + ["usr/lib/squid/log_file_daemon", "usr/lib/squid/unlinkd"],
)
def test_binaries_are_built_for_the_expected_architecture(
    layout: SquidLayout, relative: str
) -> None:
    arch = expected_arch()
    assert requirements(layout, relative).machine == _MACHINES[arch], (
        f"{relative} is not a linux/{arch} program"
    )


@pytest.mark.parametrize("relative", sorted(_EXPECTED_NEEDED))
def test_symbol_versions_are_within_trixie(layout: SquidLayout, relative: str) -> None:
    found = requirements(layout, relative)
    assert found.highest("GLIBC_") is not None, (
        f"{relative}: no glibc symbol versions at all; not a dynamic binary?"
    )
    for prefix, ceiling in TRIXIE_CEILINGS.items():
        too_new = [
            name
            for name in found.versions_with_prefix(prefix)
            if not version_at_most(name, ceiling)
        ]
        assert not too_new, f"{relative} needs {too_new}, newer than Debian 13's {ceiling}"


@pytest.mark.parametrize("relative", sorted(_EXPECTED_NEEDED))
def test_needed_libraries_are_exactly_the_expected_set(layout: SquidLayout, relative: str) -> None:
    found = requirements(layout, relative)
    loader = _LOADERS.get(found.machine)
    assert loader, (
        f"{relative}: unexpected ELF machine {found.machine}; add its dynamic loader to _LOADERS"
    )
    # The statically linked C++ runtime uses thread-local storage through
    # __tls_get_addr, which the dynamic loader itself exports.
    expected = _EXPECTED_NEEDED[relative] | {loader}
    assert set(found.needed) == expected
    assert len(found.needed) == len(set(found.needed)), (
        f"{relative}: duplicate DT_NEEDED {found.needed}"
    )


def test_no_sandbox_paths_in_shipped_files(layout: SquidLayout) -> None:
    offenders: list[str] = []
    for path in sorted(layout.root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            offenders += [
                f"{path.relative_to(layout.root)}: {m.decode()}"
                for m in SANDBOX_MARKERS
                if m in data
            ]
    assert not offenders, "build paths leaked into: " + ", ".join(offenders)


def test_rootfs_has_the_image_layout(layout: SquidLayout) -> None:
    root = layout.root
    assert os.access(root / "usr/sbin/squid", os.X_OK)
    for helper in (
        "security_file_certgen",
        "basic_ncsa_auth",
        "log_file_daemon",
        "unlinkd",
        "pinger",
    ):
        assert os.access(root / "usr/lib/squid" / helper, os.X_OK), helper
    assert (root / "usr/share/squid/errors/templates/ERR_ACCESS_DENIED").is_file()
    assert (root / "usr/share/squid/icons").is_dir()
    assert "text/html" in (root / "usr/share/squid/mime.conf").read_text()
    assert sorted(p.name for p in (root / "usr").iterdir()) == ["lib", "sbin", "share"]
    assert not (root / "var").exists() and not (root / "etc").exists()


def _layer_path() -> Path:
    value = os.environ.get("CEPHALOPROXY_SQUID_LAYER", "")
    if not value:
        pytest.skip("CEPHALOPROXY_SQUID_LAYER is not set (set by //squid:squid_binaries_test)")
    return resolve_runfile(value)


def test_layer_matches_rootfs_and_is_root_owned(layout: SquidLayout) -> None:
    with tarfile.open(_layer_path()) as tar:
        members = tar.getmembers()
    names = [m.name.rstrip("/") for m in members]
    assert names == sorted(names, key=lambda n: n.split("/")), "layer entries are not sorted"
    rootfs_names = sorted(str(p.relative_to(layout.root)) for p in layout.root.rglob("*"))
    assert sorted(names) == rootfs_names
    for member in members:
        assert (member.uid, member.gid) == (0, 0), member.name
        assert member.mtime == 946684800, member.name
        assert not member.mode & 0o6000, f"{member.name} is setuid/setgid"
        assert not member.name.startswith(("var", "etc", "/", "./")), member.name
        if member.isfile():
            program = member.name.startswith(("usr/sbin/", "usr/lib/squid/"))
            assert member.mode == (0o755 if program else 0o644), (
                f"{member.name}: mode {member.mode:o}"
            )
    assert "usr/sbin/squid" in names
    assert "usr/lib/squid/security_file_certgen" in names
