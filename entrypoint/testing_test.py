"""The test harness itself: a dead entrypoint is reported at once, with its exit code and output."""

from __future__ import annotations

import time

import pytest

from entrypoint.testing import EntrypointRun, Workspace, python_for_child, workspace  # noqa: F401 - fixture

# Exits 3 after printing, leaving a grandchild that keeps stdout/stderr open for 60 s: the
# readers stay alive, which is what used to make the harness wait for its whole timeout.
_DIES_LEAVING_A_GRANDCHILD = (
    "import subprocess, sys;"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
    "print('about to die', flush=True); print('last words on stderr', file=sys.stderr, flush=True);"
    "sys.exit(3)"
)


def test_dead_entrypoint_is_reported_with_exit_code_and_output(workspace: Workspace) -> None:
    run = EntrypointRun(
        workspace, workspace.env(), [python_for_child(), "-c", _DIES_LEAVING_A_GRANDCHILD]
    )
    try:
        started = time.monotonic()
        with pytest.raises(AssertionError) as failure:
            run.wait_for_output(r"Container ready", timeout=60)
        # A contract bound, not a speed goal: far below the 60 s the wait would otherwise take.
        assert time.monotonic() - started < 30
        message = str(failure.value)
        assert "exit code 3" in message
        assert "about to die" in message and "last words on stderr" in message
    finally:
        run.cleanup()
