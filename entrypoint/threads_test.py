"""A process-directed signal taken by any helper thread still stops PID 1 and the health server."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from entrypoint.threads import start_daemon_thread
from tests.entrypoint.harness import children_of, http_get, wait_until
from tests.entrypoint.testing import Launcher, Workspace


def helper_threads(pid: int) -> list[int]:
    return sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)


def blocked_signals(status: str) -> set[int]:
    mask = int(next(ln for ln in status.splitlines() if ln.startswith("SigBlk:")).split()[1], 16)
    return {signum for signum in range(1, 65) if mask & (1 << (signum - 1))}


def health_server_of(pid1: int) -> int:
    for child in children_of(pid1):
        if b"healthcheck_cli" in Path(f"/proc/{child}/cmdline").read_bytes():
            return child
    raise AssertionError(f"PID 1 ({pid1}) has no health server child")


def test_a_helper_thread_blocks_asynchronous_signals_and_the_caller_keeps_its_mask() -> None:
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    seen: dict[str, str] = {}
    done = threading.Event()

    def record() -> None:
        seen["status"] = Path(f"/proc/self/task/{threading.get_native_id()}/status").read_text()
        done.set()

    start_daemon_thread(record, "record")
    assert done.wait(10)
    blocked = blocked_signals(seen["status"])
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1):
        assert signum in blocked, f"{signal.Signals(signum).name} is not blocked in the thread"
    assert signal.SIGSEGV not in blocked  # a fault in the thread must still kill the process
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before


def assert_only_the_main_thread_takes_signals(pid: int, what: str) -> None:
    """The kernel delivers a process-directed signal to a thread that does not block it: with
    every helper thread blocking them, that is the main thread, whose select() it interrupts."""
    threads = helper_threads(pid)
    for tid in threads:
        blocked = blocked_signals(Path(f"/proc/{pid}/task/{tid}/status").read_text())
        missing = sorted(signal.Signals(s).name for s in HANDLED - blocked)
        assert not missing, f"{what}'s thread {tid} of {threads} may take {missing}"


# What PID 1 and the health server handle (plus SIGCHLD, PID 1's reaping).
HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD}


def test_only_the_main_thread_of_the_health_server_takes_signals(
    workspace: Workspace, launch: Launcher
) -> None:
    run = launch()
    run.wait_ready()
    server = health_server_of(run.pid)
    http_get(f"http://127.0.0.1:{workspace.health_port}/metrics", timeout=15)  # starts its worker
    assert wait_until(lambda: len(helper_threads(server)) == 2, 10), (
        f"expected the sampler and the metrics worker: {helper_threads(server)}"
    )
    assert_only_the_main_thread_takes_signals(server, "the health server")
    # And the promise itself: SIGTERM ends it at once.
    os.kill(server, signal.SIGTERM)
    assert wait_until(lambda: not Path(f"/proc/{server}").exists(), 3, interval=0.01)


def test_only_the_main_thread_of_pid1_takes_signals(workspace: Workspace, launch: Launcher) -> None:
    run = launch(workspace.env(CONFIG_RELOAD="watch", CONFIG_WATCH_INTERVAL="0.5"))
    run.wait_ready()
    run.wait_for_output(r"CONFIG_RELOAD=watch: reloading when", 30)
    assert len(helper_threads(run.pid)) == 1, helper_threads(run.pid)  # the watch thread
    assert_only_the_main_thread_takes_signals(run.pid, "PID 1")
    signalled = time.monotonic()
    os.kill(run.pid, signal.SIGTERM)
    code = run.wait_exit(30)
    elapsed = time.monotonic() - signalled
    assert code == 0 and "Shutdown complete" in run.stdout, run.output
    assert elapsed <= 1.5, f"idle stop took {elapsed:.2f} s:\n{run.output}"  # the idle-stop bound
