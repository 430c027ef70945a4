"""CEPHALOPROXY_REQUIRE_IMAGE=1 turns "skipped for want of an image or engine" into a failure (CI's guard).

Needs no image or engine: a nested pytest runs one case of this suite with nothing named.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import image_source

REPO = Path(__file__).resolve().parent.parent.parent
CASE = "tests/acceptance/acceptance_test.py::test_image_exposes_proxy_and_health_ports"


def run_without_image(require: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (image_source.IMAGE_ENV, image_source.TARBALL_ENV)}
    env.pop(image_source.REQUIRE_ENV, None)
    # The nested pytest imports what this one does (under Bazel sys.path is not PYTHONPATH).
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    if require is not None:
        env[image_source.REQUIRE_ENV] = require
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rsfE", CASE]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_without_the_switch_a_missing_image_skips() -> None:
    done = run_without_image(None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout and "no CephaloProxy image to test" in done.stdout, done.stdout


def test_with_the_switch_a_missing_image_fails() -> None:
    done = run_without_image("1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "skipped" not in done.stdout.splitlines()[-1], done.stdout
    assert "no CephaloProxy image to test" in done.stdout and f"{image_source.REQUIRE_ENV}=1" in done.stdout, done.stdout


@pytest.mark.parametrize("value", ["yes", "true", "2"])
def test_an_unclear_switch_value_fails_naming_the_variable(value: str) -> None:
    done = run_without_image(value)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{image_source.REQUIRE_ENV}={value!r}" in done.stdout, done.stdout
