"""After the supervisor's loop has ended, a stop signal cannot cut PID 1's last kill and flush short."""

from __future__ import annotations

import fcntl
import os
import signal
import time

import pytest

from entrypoint.harness import catches, wait_for_status
from entrypoint.testing import Launcher, launch, squid_available, workspace  # noqa: F401 - fixtures

F_SETPIPE_SZ = 1031  # fcntl.h; Python 3.10+ has fcntl.F_SETPIPE_SZ on Linux
SIGNAL_BOUND = 30.0


def _handler_gone(pid: int, signum: int, timeout: float) -> bool:
    """Until `pid` no longer has its own handler for `signum` (asyncio.run has ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not catches(pid, signum):
            return True
        time.sleep(0.001)
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_during_the_final_flush_is_ignored(
    launch: Launcher, workspace, signum: int
) -> None:  # type: ignore[no-untyped-def]
    # A one-page stdout pipe nobody reads: lines queue up, so the final flush waits its full
    # second, which is the window a signal used to hit.
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, getattr(fcntl, "F_SETPIPE_SZ", F_SETPIPE_SZ), 4096)
    try:
        run = launch(workspace.env(LOG_LEVEL="DEBUG"), stdout=write_end)
        os.close(write_end)
        write_end = -1
        wait_for_status(f"http://127.0.0.1:{workspace.health_port}/ready", 200, 90)
        os.kill(run.pid, signal.SIGTERM)
        assert _handler_gone(run.pid, signal.SIGTERM, SIGNAL_BOUND), (
            "the supervisor's loop never ended"
        )
        os.kill(run.pid, signum)
        code = run.wait_exit(SIGNAL_BOUND)
        assert code == 0, (
            f"{signal.Signals(signum).name} during the final flush: exit {code}; stderr:\n{run.stderr}"
        )
        assert "Traceback" not in run.stderr, run.stderr
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)
