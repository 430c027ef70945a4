"""CEPHALOPROXY_REQUIRE_IMAGE=1 turns "skipped for want of an image or engine" into a failure (CI's guard).

Needs no image or engine: a nested pytest runs one case of this suite with nothing named.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.acceptance.conftest import run_nested_pytest
from tests.support import image_source

CASE = "tests/acceptance/acceptance_test.py::test_image_exposes_proxy_and_health_ports"


def run_without_image(require: str | None) -> subprocess.CompletedProcess[str]:
    unset = {image_source.IMAGE_ENV: None, image_source.TARBALL_ENV: None}
    return run_nested_pytest(CASE, {**unset, image_source.REQUIRE_ENV: require}, timeout=120)


def test_without_the_switch_a_missing_image_skips() -> None:
    done = run_without_image(None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout and "no CephaloProxy image to test" in done.stdout, (
        done.stdout
    )


def test_with_the_switch_a_missing_image_fails() -> None:
    done = run_without_image("1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "skipped" not in done.stdout.splitlines()[-1], done.stdout
    assert (
        "no CephaloProxy image to test" in done.stdout
        and f"{image_source.REQUIRE_ENV}=1" in done.stdout
    ), done.stdout


@pytest.mark.parametrize("value", ["yes", "true", "2"])
def test_an_unclear_switch_value_fails_naming_the_variable(value: str) -> None:
    done = run_without_image(value)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{image_source.REQUIRE_ENV}={value!r}" in done.stdout, done.stdout
