"""container_counts against JUnit XML written here the way pytest writes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.ci import container_counts


def _junit(path: Path, passed: int = 0, failed: int = 0, skipped: int = 0) -> Path:
    cases = (
        '<testcase name="p"/>' * passed
        + '<testcase name="f"><failure message="x"/></testcase>' * failed
        + '<testcase name="s"><skipped message="no image"/></testcase>' * skipped
    )
    path.write_text(
        f'<?xml version="1.0"?><testsuites><testsuite>{cases}</testsuite></testsuites>',
        encoding="utf-8",
    )
    return path


def test_all_passed_is_green(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    podman, docker = _junit(tmp_path / "p.xml", passed=38), _junit(tmp_path / "d.xml", passed=33)
    assert container_counts.main([f"podman={podman}", f"docker={docker}"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "podman: 38 passed, 0 failed, 0 skipped",
        "docker: 33 passed, 0 failed, 0 skipped",
    ]


@pytest.mark.parametrize(("failed", "skipped"), [(1, 0), (0, 1), (2, 3)])
def test_a_failure_or_a_skip_fails_and_names_the_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], failed: int, skipped: int
) -> None:
    good = _junit(tmp_path / "p.xml", passed=5)
    bad = _junit(tmp_path / "a.xml", passed=5, failed=failed, skipped=skipped)
    assert container_counts.main([f"podman={good}", f"arm64={bad}"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0].endswith("0 skipped")
        and lines[1].startswith("arm64:")
        and lines[1].endswith("<- FAILED")
    )


def test_a_missing_or_empty_run_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = _junit(tmp_path / "e.xml")
    assert container_counts.main([f"docker={tmp_path / 'never.xml'}", f"podman={empty}"]) == 1
    out = capsys.readouterr().out
    assert "docker: no results" in out and "(no case ran)" in out


def test_bad_usage() -> None:
    assert container_counts.main([]) == 2
    assert container_counts.main(["podman"]) == 2
