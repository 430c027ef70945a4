"""$CEPHALOPROXY_TEST_TIMEOUT_SCALE: parsing, and that the suite's waits follow it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.support import runtime, timeouts


def test_default_and_given_scale() -> None:
    assert timeouts.scale({}) == 1.0
    assert timeouts.scale({timeouts.SCALE_ENV: " "}) == 1.0
    assert timeouts.scale({timeouts.SCALE_ENV: "2.5"}) == 2.5
    assert timeouts.scaled(30, {timeouts.SCALE_ENV: "3"}) == 90


@pytest.mark.parametrize("value", ["fast", "0.5", "0", "-2", "inf", "nan"])
def test_bad_scale_names_the_variable_and_value(value: str) -> None:
    with pytest.raises(timeouts.TimeoutScaleError) as raised:
        timeouts.scale({timeouts.SCALE_ENV: value})
    assert timeouts.SCALE_ENV in str(raised.value) and repr(value) in str(raised.value)


def test_runtime_waits_are_scaled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake CLI that answers after 1.5 s: a 1 s bound fails unscaled and passes at x3.
    slow = tmp_path / "docker"
    slow.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(1.5)\n")
    slow.chmod(0o755)
    spec = runtime.RuntimeSpec("docker", (str(slow),), {})
    with pytest.raises(runtime.ContainerRuntimeError, match="timed out after 1 s"):
        runtime.ContainerRuntime(spec).command(["ps"], timeout=1)
    monkeypatch.setenv(timeouts.SCALE_ENV, "3")
    wrapper = runtime.ContainerRuntime(spec)
    started = time.monotonic()
    assert wrapper.command(["ps"], timeout=1).returncode == 0
    assert time.monotonic() - started >= 1.4
    assert wrapper.default_timeout == 3 * runtime.DEFAULT_TIMEOUT_S
