"""The config check's head start: `squid -k parse` runs while PID 1 still imports asyncio, and changes nothing else."""

from __future__ import annotations

from tests.entrypoint.testing import (
    Launcher,
    Workspace,
    pausing_squid,
    python_for_child,
    ssl_bump_config,
)

# Runs entrypoint.py; at the first import of asyncio it waits (at most `wait` seconds) for
# `marker` (the config check has begun) and writes to `record` whether it appeared meanwhile.
WAIT_AT_ASYNCIO = """
import os, runpy, sys, time
marker, record, wait, script = sys.argv[1:5]
seen = []
def hook(event, args):
    if event == "import" and args[0] == "asyncio" and not seen:
        deadline = time.monotonic() + float(wait)
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(os.path.exists(marker))
        with open(record, "w") as handle:
            handle.write("check begun" if seen[0] else "no check yet")
sys.addaudithook(hook)
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
"""


def launch_waiting_at_asyncio(
    workspace: Workspace, launch: Launcher, env: dict[str, str], wait: float = 20.0
):
    wrapper, marker = pausing_squid(workspace, "-k parse", pause=0)
    record = workspace.var / "at-asyncio"
    run = launch(
        workspace.env(**env, CEPHALOPROXY_SQUID_BIN=str(wrapper)),
        argv=[
            python_for_child(),
            "-c",
            WAIT_AT_ASYNCIO,
            str(marker),
            str(record),
            str(wait),
            str(workspace.bin / "entrypoint.py"),
        ],
    )
    return run, record


def test_the_config_check_begins_before_asyncio_is_imported(
    workspace: Workspace, launch: Launcher
) -> None:
    run, record = launch_waiting_at_asyncio(workspace, launch, {})
    run.wait_for_output(r"Container ready", 90)
    assert record.read_text() == "check begun", run.output
    # The contract's order of steps in the log is the same as without the head start (the
    # health server starts once Squid listens, or during a first `squid -z` that takes long).
    order = [
        "CephaloProxy entrypoint starting",
        "Runtime directories are writable",
        "Checking Squid config",
        "Starting Squid proxy",
        "Container ready",
    ]
    positions = [run.stdout.find(line) for line in order]
    assert -1 not in positions and positions == sorted(positions), run.stdout
    assert positions[2] < run.stdout.find("Starting health server") < positions[4], run.stdout


def test_a_config_squid_rejects_never_serves_although_its_check_began_early(
    workspace: Workspace, launch: Launcher
) -> None:
    # Valid for the entrypoint's reading (pid_filename and all), refused by `squid -k parse`.
    workspace.write_custom_config(
        f"http_port {workspace.squid_port}\nno_such_directive on\n"
        f"pid_filename {workspace.runtime_dir('run')}/squid.pid\n"
    )
    run, record = launch_waiting_at_asyncio(workspace, launch, {})
    assert run.wait_exit(90) == 1, run.output
    assert record.read_text() == "check begun", run.output
    assert "Squid rejected the config" in run.stderr
    assert "no_such_directive" in run.stderr
    assert "Starting Squid proxy" not in run.stdout
    assert run.descendants_left() == []


def test_without_the_head_start_the_startup_checks_itself(
    workspace: Workspace, launch: Launcher
) -> None:
    # SSL-bump needs the CA installed before the check: no head start, the same outcome (here
    # the missing CA pair is refused before any check, by the startup's own step).
    workspace.write_custom_config(ssl_bump_config(workspace))
    run, record = launch_waiting_at_asyncio(workspace, launch, {"LOG_LEVEL": "DEBUG"}, wait=3.0)
    assert run.wait_exit(90) == 1, run.output
    assert record.read_text() == "no check yet", run.output
    assert "Phase head_start took" in run.stdout and "left to the startup" in run.stdout
    assert str(workspace.tls_dir / "tls.crt") in run.stderr and "is missing" in run.stderr
    assert "Checking Squid config" not in run.stdout
    assert run.descendants_left() == []


def _loads_tls_library(pid: int) -> bool:
    """Whether process `pid` has OpenSSL or Python's `_ssl` mapped (what `import ssl` loads)."""
    with open(f"/proc/{pid}/maps") as maps:
        return any("libssl" in line or "/_ssl." in line for line in maps)


def test_pid_1_without_ssl_bump_never_loads_the_tls_library(
    workspace: Workspace, launch: Launcher
) -> None:
    """asyncio would import `ssl` (libssl and libcrypto: 5-8 ms of every start) for TLS streams
    PID 1 never opens; it is refused while asyncio loads, and nothing later imports it unless
    SSL-bump is on (issue 27)."""
    import subprocess

    control = subprocess.Popen(
        [python_for_child(), "-c", "import ssl, sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert control.stdout is not None and control.stdout.readline() == "ready\n"
        assert _loads_tls_library(control.pid), "the probe does not see an imported ssl here"
    finally:
        control.kill()
        control.wait(10)
    run = launch(workspace.env(LOG_LEVEL="DEBUG"))
    run.wait_ready()
    assert not _loads_tls_library(run.process.pid), run.output
    run.process.terminate()
    assert run.wait_exit(60) == 0, run.output
