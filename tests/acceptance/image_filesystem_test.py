"""Case 1: the exported filesystem has no shell or package manager; trixie; Python >= 3.13; Squid with OpenSSL."""

from __future__ import annotations

import posixpath
import re
import tarfile
from pathlib import Path

import pytest

from tests.support import harness
from tests.support.runtime import ContainerRuntime, RunOptions

SHELLS = {"sh", "bash", "dash", "ash", "zsh", "ksh", "busybox"}
PACKAGE_MANAGER = re.compile(
    r"^(apt|apt-get|apt-cache|apt-config|apt-key|apt-mark|aptitude|dpkg|dpkg-[a-z-]+|"
    r"rpm|yum|dnf|microdnf|apk|pip|pip[0-9.]+)$"
)


@pytest.fixture(scope="module")
def exported(
    container_runtime: ContainerRuntime, image_ref: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    factory = harness.ContainerFactory(container_runtime, image_ref, label="export")
    name = factory.unique_name()
    destination = tmp_path_factory.mktemp("export") / "rootfs.tar"
    try:
        container_runtime.create(image_ref, name)
        container_runtime.export(name, destination)
    finally:
        factory.cleanup()
    return destination


def _members(tar_path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tar_path) as archive:
        return {
            "/" + member.name.lstrip("./").rstrip("/"): member for member in archive.getmembers()
        }


def _read_following_links(tar_path: Path, path: str) -> str:
    members = _members(tar_path)
    for _ in range(10):
        member = members.get(path)
        assert member is not None, f"{path} is not in the image"
        if member.issym():
            path = posixpath.normpath(posixpath.join(posixpath.dirname(path), member.linkname))
            continue
        with tarfile.open(tar_path) as archive:
            handle = archive.extractfile(member.name)
            assert handle is not None
            return handle.read().decode("utf-8")
    raise AssertionError(f"symlink loop at {path}")


def test_no_shell_anywhere(exported: Path) -> None:
    found = sorted(path for path, member in _members(exported).items()
                   if not member.isdir() and posixpath.basename(path) in SHELLS)  # fmt: skip
    assert found == [], f"shell binaries in the image: {found}"


def test_no_package_manager_binaries(exported: Path) -> None:
    found = sorted(
        path
        for path, member in _members(exported).items()
        if PACKAGE_MANAGER.match(posixpath.basename(path))
        and (member.issym() or (member.isfile() and member.mode & 0o111))
    )
    assert found == [], f"package-manager executables in the image: {found}"


def test_os_release_is_debian_13_trixie(exported: Path) -> None:
    fields = dict(
        line.split("=", 1)
        for line in _read_following_links(exported, "/etc/os-release").splitlines()
        if "=" in line
    )
    values = {key: value.strip('"') for key, value in fields.items()}
    assert values.get("ID") == "debian", values
    assert values.get("VERSION_ID") == "13", values
    assert values.get("VERSION_CODENAME") == "trixie", values


def test_python_is_3_13_or_newer(container_runtime: ContainerRuntime, image_ref: str) -> None:
    factory = harness.ContainerFactory(container_runtime, image_ref, label="pyversion")
    try:
        done = container_runtime.run_once(
            image_ref,
            RunOptions(
                name=factory.unique_name(), entrypoint=harness.PYTHON, command=("--version",)
            ),
        )
    finally:
        factory.cleanup()
    assert done.returncode == 0, done.stderr
    match = re.search(r"Python (\d+)\.(\d+)", done.stdout + done.stderr)
    assert match, f"unexpected `python3 --version` output: {done.stdout!r} {done.stderr!r}"
    assert (int(match.group(1)), int(match.group(2))) >= (3, 13), match.group(0)


def test_squid_is_built_with_openssl_and_ssl_crtd(
    container_runtime: ContainerRuntime, image_ref: str
) -> None:
    factory = harness.ContainerFactory(container_runtime, image_ref, label="squidv")
    try:
        done = container_runtime.run_once(
            image_ref,
            RunOptions(name=factory.unique_name(), entrypoint="/usr/sbin/squid", command=("-v",)),
        )
    finally:
        factory.cleanup()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "OpenSSL" in output or "--with-openssl" in output, output
    assert "ssl-crtd" in output, output
