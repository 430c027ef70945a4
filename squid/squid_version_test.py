"""`squid -v` of the Squid under test: release, OpenSSL, SSL-bump helper, no build paths."""

from __future__ import annotations

import ast
import shlex
import subprocess

import pytest

from squid.squid_under_test import (
    ARCH_TRIPLET,
    REPO_ROOT,
    expected_arch,
    expected_version,
    host_arch,
    runnable_squid,
)

# Fragments of the places a build sandbox lives; none may reach `squid -v`.
SANDBOX_MARKERS = ("execroot", "bazel-out", "sandbox", ".build_tmpdir", "_main~", "/tmp/")


@pytest.fixture(scope="module")
def version_output() -> str:
    layout = runnable_squid()
    if layout.is_system:
        pytest.skip(
            "checks the Squid //squid builds; CEPHALOPROXY_SQUID_ROOT is unset or '/' (system Squid)"
        )
    result = subprocess.run([str(layout.squid), "-v"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"squid -v exited {result.returncode}: {result.stderr}"
    return result.stdout


def test_reports_the_pinned_release(version_output: str) -> None:
    first_line = version_output.splitlines()[0]
    assert first_line == f"Squid Cache: Version {expected_version()}"


def test_uses_openssl(version_output: str) -> None:
    assert "This binary uses OpenSSL 3." in version_output


def test_was_configured_for_ssl_bump(version_output: str) -> None:
    options = version_output.split("configure options:", 1)[1]
    for flag in (
        "'--with-openssl'",
        "'--enable-ssl-crtd'",
        "'--prefix=/usr'",
        "'--sysconfdir=/etc/squid'",
    ):
        assert flag in options


def test_names_no_build_sandbox_path(version_output: str) -> None:
    for marker in SANDBOX_MARKERS:
        assert marker not in version_output, f"`squid -v` mentions {marker!r}:\n{version_output}"


def configure_flags() -> list[str]:
    """SQUID_CONFIGURE_FLAGS as squid/configure_flags.bzl lists them (Starlark list literal)."""
    tree = ast.parse((REPO_ROOT / "squid" / "configure_flags.bzl").read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", "") == "SQUID_CONFIGURE_FLAGS"
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError("squid/configure_flags.bzl has no SQUID_CONFIGURE_FLAGS")


def test_was_configured_with_exactly_the_pinned_flags(version_output: str) -> None:
    # The same flags for every architecture; a cross build adds only configure's --host.
    recorded = shlex.split(version_output.split("configure options:", 1)[1].strip().splitlines()[0])
    arch = expected_arch()
    cross = [f"--host={ARCH_TRIPLET[arch]}"] if arch != host_arch() else []
    assert recorded == ["--prefix=/usr"] + cross + configure_flags()
