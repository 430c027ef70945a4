"""`squid -v` of the Squid under test: release, OpenSSL, SSL-bump helper, no build paths."""

from __future__ import annotations

import subprocess

import pytest

from squid.squid_under_test import expected_version, squid_under_test

# Fragments of the places a build sandbox lives; none may reach `squid -v`.
SANDBOX_MARKERS = ("execroot", "bazel-out", "sandbox", ".build_tmpdir", "_main~", "/tmp/")


@pytest.fixture(scope="module")
def version_output() -> str:
    layout = squid_under_test()
    if layout.is_system:
        pytest.skip("checks the Squid //squid builds; CEPHALOPROXY_SQUID_ROOT is unset or '/' (system Squid)")
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
    for flag in ("'--with-openssl'", "'--enable-ssl-crtd'", "'--prefix=/usr'", "'--sysconfdir=/etc/squid'"):
        assert flag in options


def test_names_no_build_sandbox_path(version_output: str) -> None:
    for marker in SANDBOX_MARKERS:
        assert marker not in version_output, f"`squid -v` mentions {marker!r}:\n{version_output}"
