"""Signals at the wrong moment: during imports, during the config check, while Squid starts, fatal ones."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from entrypoint.testing import (  # noqa: F401 - fixtures
    Launcher, Workspace, catches, launch, pausing_squid, process_state, python_for_child, squid_available,
    wait_until, workspace,
)

# Runs entrypoint.py, pausing 0.5 s the first time `target` is imported (after writing `marker`),
# so a signal lands while the imports are still running.
IMPORT_PAUSE = """
import runpy, sys, time
target, marker, script = sys.argv[1:4]
paused = []
def hook(event, args):
    if event == "import" and args[0] == target and not paused:
        paused.append(True)
        open(marker, "w").close()
        time.sleep(0.5)
sys.addaudithook(hook)
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
"""


def assert_aborted_cleanly(run) -> None:  # type: ignore[no-untyped-def]
    assert run.wait_exit(60) == 0, run.output
    assert "Shutdown complete" in run.stdout
    assert "Container ready" not in run.stdout
    assert run.descendants_left() == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("module", ["entrypoint.main", "asyncio", "entrypoint.supervisor"])
def test_stop_signal_during_the_imports_aborts_startup(workspace: Workspace, launch: Launcher, module: str, signum: int) -> None:
    marker = workspace.var / "importing"
    run = launch(argv=[python_for_child(), "-c", IMPORT_PAUSE, module, str(marker), str(workspace.bin / "entrypoint.py")])
    assert wait_until(marker.exists, 60), run.output
    run.process.send_signal(signum)
    assert_aborted_cleanly(run)
    assert "Starting Squid proxy" not in run.stdout


def test_sigterm_as_soon_as_it_is_caught_aborts_startup_every_time(workspace: Workspace, launch: Launcher) -> None:
    for attempt in range(8):
        run = launch()
        assert wait_until(lambda: catches(run.pid, signal.SIGTERM), 30, interval=0.001), f"attempt {attempt}"
        run.process.send_signal(signal.SIGTERM)
        assert_aborted_cleanly(run)


def test_sigterm_during_the_config_check_aborts_before_squid_starts(workspace: Workspace, launch: Launcher) -> None:
    wrapper, marker = pausing_squid(workspace, "-k parse")
    run = launch(workspace.env(CEPHALOPROXY_SQUID_BIN=str(wrapper)))
    assert wait_until(marker.exists, 60), run.output
    parse_pid = int(marker.read_text())
    run.process.send_signal(signal.SIGTERM)
    assert_aborted_cleanly(run)
    assert "Starting Squid proxy" not in run.stdout
    assert process_state(parse_pid) is None


def test_sigterm_while_squid_starts_stops_it_before_ready(workspace: Workspace, launch: Launcher) -> None:
    wrapper, marker = pausing_squid(workspace, "--foreground -d")
    run = launch(workspace.env(CEPHALOPROXY_SQUID_BIN=str(wrapper)))
    assert wait_until(marker.exists, 60), run.output
    squid_pid = int(marker.read_text())  # exec keeps the pid: this is the Squid master
    run.process.send_signal(signal.SIGTERM)
    assert_aborted_cleanly(run)
    assert "Starting Squid proxy" in run.stdout
    assert process_state(squid_pid) is None


ORPHAN_MAKER = """import os, sys, time
record = sys.argv[1]
if os.fork() == 0:
    os.setsid()  # its own session and group: not in Squid's process group any more
    if os.fork() == 0:
        with open(record + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(record + ".tmp", record)
        time.sleep(600)
    os._exit(0)  # the grandchild is now an orphan, re-parented to the entrypoint
for line in sys.stdin:
    sys.stdout.write("ERR\\n")
    sys.stdout.flush()
"""


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


@pytest.mark.parametrize("signum", [signal.SIGQUIT, signal.SIGUSR1])
def test_fatal_signal_as_subreaper_leaves_no_descendant_alive(workspace: Workspace, launch: Launcher, signum: int) -> None:
    helper = workspace.etc / "orphan_maker.py"
    helper.write_text(ORPHAN_MAKER)
    os.chmod(helper, 0o664)
    record = workspace.var / "orphan.pid"
    run_dir = workspace.runtime_dir("run")
    workspace.write_custom_config(
        f"http_port 127.0.0.1:{workspace.squid_port}\npid_filename {run_dir}/squid.pid\n"
        "http_access allow localhost\nhttp_access deny all\ncache_log /dev/stderr\n"
        "access_log stdio:/dev/stdout\nlogfile_rotate 0\nvisible_hostname fatal-test\n"
        "shutdown_lifetime 1 seconds\npinger_enable off\nnetdb_filename none\n"
        f"url_rewrite_program {python_for_child()} {helper} {record}\n"
        "url_rewrite_children 1 startup=1 idle=1\n"
    )
    run = launch()
    squid_pid = run.wait_ready()
    assert wait_until(record.exists, 60), run.output
    orphan = int(record.read_text())
    assert wait_until(lambda: orphan in children_of(run.pid), 10), "the orphan was not re-parented"
    alive = children_of(run.pid)  # Squid, the health server, the orphan
    assert squid_pid in alive and len(alive) >= 3
    run.process.send_signal(signum)
    run.wait_exit(30)
    for pid in alive + [orphan]:
        assert wait_until(lambda: process_state(pid) in (None, "Z"), 10), f"pid {pid} outlived the entrypoint"
