"""Signals at the wrong moment: during imports, during the config check, while Squid starts, fatal ones."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from entrypoint.harness import as_pid1, children_of, pid1_host_pid, pid_namespace_problem
from entrypoint.proc_table import process_tree
from entrypoint.testing import (  # noqa: F401 - fixtures
    Launcher,
    Workspace,
    catches,
    launch,
    pausing_squid,
    process_state,
    python_for_child,
    squid_available,
    wait_until,
    workspace,
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
def test_stop_signal_during_the_imports_aborts_startup(
    workspace: Workspace, launch: Launcher, module: str, signum: int
) -> None:
    marker = workspace.var / "importing"
    run = launch(
        argv=[
            python_for_child(),
            "-c",
            IMPORT_PAUSE,
            module,
            str(marker),
            str(workspace.bin / "entrypoint.py"),
        ]
    )
    assert wait_until(marker.exists, 60), run.output
    run.process.send_signal(signum)
    assert_aborted_cleanly(run)
    assert "Starting Squid proxy" not in run.stdout


def test_sigterm_as_soon_as_it_is_caught_aborts_startup_every_time(
    workspace: Workspace, launch: Launcher
) -> None:
    for attempt in range(8):
        run = launch()
        assert wait_until(lambda: catches(run.pid, signal.SIGTERM), 30, interval=0.001), (
            f"attempt {attempt}"
        )
        run.process.send_signal(signal.SIGTERM)
        assert_aborted_cleanly(run)


def test_sigterm_during_the_config_check_aborts_before_squid_starts(
    workspace: Workspace, launch: Launcher
) -> None:
    wrapper, marker = pausing_squid(workspace, "-k parse")
    run = launch(workspace.env(CEPHALOPROXY_SQUID_BIN=str(wrapper)))
    assert wait_until(marker.exists, 60), run.output
    parse_pid = int(marker.read_text())
    run.process.send_signal(signal.SIGTERM)
    assert_aborted_cleanly(run)
    assert "Starting Squid proxy" not in run.stdout
    assert process_state(parse_pid) is None


def test_sigterm_while_squid_starts_stops_it_before_ready(
    workspace: Workspace, launch: Launcher
) -> None:
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


@pytest.mark.parametrize(
    "signum", [signal.SIGQUIT, signal.SIGUSR1, signal.SIGXCPU, signal.SIGSYS, signal.SIGRTMIN + 2]
)
def test_fatal_signal_as_subreaper_leaves_no_descendant_alive(
    workspace: Workspace, launch: Launcher, signum: int
) -> None:
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
        assert wait_until(lambda: process_state(pid) in (None, "Z"), 10), (
            f"pid {pid} outlived the entrypoint"
        )


# A url_rewrite helper leaving two processes that left Squid's session and process group: one
# stays below the helper (in Squid's tree), the other is orphaned (re-parented to the entrypoint).
SETSID_PAIR = """import os, sys, time
record = sys.argv[1]
def leave_and_sleep(name):
    with open(f"{record}.{name}.tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(f"{record}.{name}.tmp", f"{record}.{name}")
    time.sleep(600)
    os._exit(0)
if os.fork() == 0:
    os.setsid()
    leave_and_sleep("in-tree")
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        leave_and_sleep("orphan")
    os._exit(0)
for line in sys.stdin:
    sys.stdout.write("ERR\\n")
    sys.stdout.flush()
"""


def config_with_helper(workspace: Workspace, script: str, record: Path) -> None:
    helper = workspace.etc / "helper.py"
    helper.write_text(script)
    os.chmod(helper, 0o664)
    run_dir = workspace.runtime_dir("run")
    workspace.write_custom_config(
        f"http_port 127.0.0.1:{workspace.squid_port}\npid_filename {run_dir}/squid.pid\n"
        "http_access allow localhost\nhttp_access deny all\ncache_log /dev/stderr\n"
        "access_log stdio:/dev/stdout\nlogfile_rotate 0\nvisible_hostname kill-test\n"
        "shutdown_lifetime 1 seconds\npinger_enable off\nnetdb_filename none\n"
        f"url_rewrite_program {python_for_child()} {helper} {record}\n"
        "url_rewrite_children 1 startup=1 idle=1\n"
    )


@pytest.mark.parametrize("way_out", ["sigterm", "squid-dies"])
def test_every_descendant_is_killed_on_the_way_out(
    workspace: Workspace, launch: Launcher, way_out: str
) -> None:
    record = workspace.var / "left"
    config_with_helper(workspace, SETSID_PAIR, record)
    run = launch()
    squid_pid = run.wait_ready()
    marks = [Path(f"{record}.in-tree"), Path(f"{record}.orphan")]
    assert wait_until(lambda: all(m.exists() for m in marks), 60), run.output
    in_tree, orphan = (int(m.read_text()) for m in marks)
    assert wait_until(lambda: orphan in children_of(run.pid), 10), "the orphan was not re-parented"
    tree = [
        p.pid for p in process_tree(run.pid)[1:]
    ]  # Squid, its kid, the helper, the health server, both
    assert {squid_pid, in_tree, orphan} <= set(tree) and len(tree) >= 6, tree
    if way_out == "sigterm":
        run.process.send_signal(signal.SIGTERM)
        assert run.wait_exit(30) == 0, run.output
    else:
        os.kill(squid_pid, signal.SIGKILL)
        assert run.wait_exit(30) == 1, run.output
    left = [pid for pid in tree if process_state(pid) not in (None, "Z")]
    for pid in left:  # outside the run's session: its cleanup would not find them
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"outlived the entrypoint: {left} (in-tree {in_tree}, orphan {orphan})"


# -- the window after exec, as PID 1 ---------------------------------------------------------------
# Delays (s) after exec at which SIGTERM reaches PID 1: around Python's own start-up (~20 ms).
EXEC_DELAYS = (0.0, 0.005, 0.010, 0.015, 0.020, 0.025, 0.030, 0.040, 0.060)


def launch_as_pid1(workspace: Workspace, launch: Launcher) -> tuple[object, int, float]:
    """The entrypoint as PID 1 of its own pid namespace: (run, its pid here, time.monotonic() of its exec)."""
    stamp = workspace.root / f"exec-stamp-{time.monotonic_ns()}"
    run = launch(
        argv=as_pid1([python_for_child(), str(workspace.bin / "entrypoint.py")], stamp), user=(0, 0)
    )
    assert wait_until(stamp.exists, 30, interval=0.0005), run.output
    exec_at = float(stamp.read_text())
    return run, pid1_host_pid(run.pid), exec_at


def sigterm_outcome(run, pid1: int) -> str:  # type: ignore[no-untyped-def]
    """ "honoured" (startup aborted, exit 0) or "lost" (it went on to `Container ready`)."""
    run.wait_for_output(r"Startup aborted by signal|Container ready", 90)
    if "Container ready" in run.stdout:
        os.kill(pid1, signal.SIGTERM)
        assert run.wait_exit(30) == 0, run.output
        return "lost"
    assert_aborted_cleanly(run)
    return "honoured"


def test_sigterm_to_pid1_is_honoured_once_caught_and_from_the_first_log_line_on(
    workspace: Workspace, launch: Launcher
) -> None:
    if pid_namespace_problem() is not None:
        pytest.skip(str(pid_namespace_problem()))
    # The measurement: SIGTERM at increasing delays after exec. Before the handler is installed
    # (Python's own start-up) the kernel drops a SIGTERM to PID 1; once it is, none may be lost.
    trials = []
    for delay in EXEC_DELAYS:
        run, pid1, exec_at = launch_as_pid1(workspace, launch)
        time.sleep(max(0.0, exec_at + delay - time.monotonic()))
        caught = catches(pid1, signal.SIGTERM)
        sent = time.monotonic() - exec_at
        os.kill(pid1, signal.SIGTERM)
        trials.append((sent, caught, sigterm_outcome(run, pid1)))
    print("SIGTERM after exec (ms), handler installed, outcome:")
    for sent, caught, outcome in trials:
        print(f"  {sent * 1000:6.1f}  {caught!s:5}  {outcome}")
    assert all(outcome == "honoured" for _, caught, outcome in trials if caught), trials
    # From the first log line on, every time.
    for attempt in range(3):
        run, pid1, _ = launch_as_pid1(workspace, launch)
        run.wait_for_output(r"CephaloProxy entrypoint starting", 60)
        os.kill(pid1, signal.SIGTERM)
        assert sigterm_outcome(run, pid1) == "honoured", (
            f"attempt {attempt}: lost after the first log line"
        )
