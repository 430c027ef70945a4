"""/health and /ready of the real entrypoint against the real Squid: stopped, crashing and looping kids."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import uuid

import pytest

from entrypoint.freezer import freeze_problem, frozen
from entrypoint.health_process import HEALTH_START_TIMEOUT
from entrypoint.proc_table import process_tree
from entrypoint.squid_serving import CRASH_LOOP_EXITS, LIVENESS_BOUND, STALL_READY
from entrypoint.testing import (  # noqa: F401 - fixtures
    Launcher,
    Workspace,
    http_get,
    launch,
    pausing_squid,
    process_state,
    squid_available,
    start_local_http_server,
    wait_for_status,
    wait_until,
    workspace,
)

# Slack on top of the contract bound for a loaded 2-core machine (not a speed goal).
SLACK = 5.0


def squid_kids(master_pid: int) -> list[int]:
    """Pids of Squid's kids (`--kid ...` in their command line) under the master."""
    kids = []
    for process in process_tree(master_pid)[1:]:
        try:
            argv = open(f"/proc/{process.pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"--kid" in argv:
            kids.append(process.pid)
    return kids


def ready_run(workspace: Workspace, launch: Launcher) -> tuple[int, str]:
    run = launch()
    squid_pid = run.wait_ready()
    base = f"http://127.0.0.1:{workspace.health_port}"
    assert wait_for_status(f"{base}/ready", 200) == (200, "READY\n")
    return squid_pid, base


def test_stopped_kid_fails_ready_at_once_and_health_within_the_bound(
    workspace: Workspace, launch: Launcher
) -> None:
    squid_pid, base = ready_run(workspace, launch)
    (kid,) = squid_kids(squid_pid)
    os.kill(kid, signal.SIGSTOP)
    try:
        assert wait_until(lambda: process_state(kid) == "T", 10)
        stopped_at = time.monotonic()
        status, body, _ = http_get(f"{base}/ready")
        assert status == 503, body
        assert (
            f"- proxy port: no runnable Squid process listens on port {workspace.squid_port} (pid {kid} stopped)"
            in body
        )
        # Liveness allows a grace (a kid that crashed once is respawned in it): not failed yet.
        assert http_get(f"{base}/health")[:2] == (200, "OK\n")
        status, body = wait_for_status(f"{base}/health", 503, LIVENESS_BOUND + SLACK)
        assert status == 503, (
            f"/health still {status} {body!r} {time.monotonic() - stopped_at:.1f} s after SIGSTOP"
        )
        assert body.startswith(
            f"NOT OK: no runnable Squid process listens on port {workspace.squid_port}"
        )
    finally:
        os.kill(kid, signal.SIGCONT)
    assert wait_for_status(f"{base}/health", 200, 10) == (200, "OK\n")
    assert wait_for_status(f"{base}/ready", 200, 10) == (200, "READY\n")


def test_kids_killed_again_and_again_fail_health_and_ready(
    workspace: Workspace, launch: Launcher
) -> None:
    # Each replacement kid listens before it is killed: only the exits show the crash loop.
    squid_pid, base = ready_run(workspace, launch)
    for exits in range(1, CRASH_LOOP_EXITS + 1):
        (kid,) = squid_kids(squid_pid)
        os.kill(kid, signal.SIGKILL)
        assert wait_until(lambda: squid_kids(squid_pid) not in ([], [kid]), 30), (
            "Squid did not respawn its kid"
        )
        if exits < CRASH_LOOP_EXITS:  # one crash is not a loop: the new kid serves again
            assert wait_for_status(f"{base}/ready", 200, 30) == (200, "READY\n")
            assert http_get(f"{base}/health")[:2] == (200, "OK\n")
    status, body = wait_for_status(f"{base}/health", 503, LIVENESS_BOUND + SLACK)
    assert status == 503
    assert body.startswith("NOT OK: squid kids keep exiting"), body
    status, body, _ = http_get(f"{base}/ready")
    assert status == 503 and "- squid process: squid kids keep exiting" in body


def test_crash_looping_smp_kids_fail_health(workspace: Workspace, launch: Launcher) -> None:
    # `workers 2` with a rock cache_dir: the kids cannot set up their IPC channels here
    # (the compiled-in /var/run/squid is not theirs) and are respawned forever; the master lives.
    spool, run_dir = workspace.runtime_dir("spool"), workspace.runtime_dir("run")
    base_config = workspace.default_config.read_text()
    workspace.write_custom_config(
        base_config.replace("http_port 3128", f"http_port 127.0.0.1:{workspace.squid_port}")
        .replace("/var/run/squid", str(run_dir))
        .replace(
            "cache_dir ufs /var/spool/squid 1024 16 64", f"workers 2\ncache_dir rock {spool} 64"
        )
        .replace("/var/spool/squid", str(spool))
    )
    run = launch()
    run.wait_for_output(r"Squid started with PID (\d+)", 90)
    base = f"http://127.0.0.1:{workspace.health_port}"
    status, body = wait_for_status(f"{base}/health", 503, LIVENESS_BOUND + SLACK)
    assert status == 503, f"/health {status} {body!r}\n{run.output[-3000:]}"
    assert "listens on port" in body or "kids keep exiting" in body
    status, body, _ = http_get(f"{base}/ready")
    assert status == 503 and ("- proxy port:" in body or "- squid process:" in body), body
    assert run.process.poll() is None  # the master lives on: only the probes can tell


ACCESS_LINE = re.compile(r"^\d+\.\d+ +\d+ \S+ [A-Z_]+/\d{3} ", re.MULTILINE)


def test_probes_leave_no_line_in_the_access_log(workspace: Workspace, launch: Launcher) -> None:
    run = launch()
    run.wait_ready()
    base = f"http://127.0.0.1:{workspace.health_port}"
    proxy = f"http://127.0.0.1:{workspace.squid_port}"
    assert wait_for_status(f"{base}/ready", 200) == (200, "READY\n")
    origin = start_local_http_server("marker")
    try:
        first, last = f"/first-{uuid.uuid4()}", f"/last-{uuid.uuid4()}"
        assert http_get(f"http://127.0.0.1:{origin.port}{first}", proxy=proxy)[0] == 200
        run.wait_for_output(re.escape(first), 30)
        for _ in range(20):
            assert http_get(f"{base}/ready")[0] == 200
            assert http_get(f"{base}/health")[0] == 200
        time.sleep(1)  # a probe's connection would be logged when Squid sees it close
        assert http_get(f"http://127.0.0.1:{origin.port}{last}", proxy=proxy)[0] == 200
        run.wait_for_output(re.escape(last), 30)
    finally:
        origin.close()
    # Whole lines strictly between the two markers' lines.
    between = run.stdout.split(first, 1)[1].split(last, 1)[0].splitlines()[1:-1]
    traces = [
        line
        for line in between
        if ACCESS_LINE.match(line) or "transaction-end-before-headers" in line
    ]
    assert traces == [], f"probes left access log lines: {traces}"


# -- the health server is ours, or startup fails ------------------------------------------------
@pytest.mark.parametrize("slow_check", [False, True], ids=["racing-the-check", "check-takes-3s"])
def test_health_port_taken_by_another_listener_fails_startup(
    workspace: Workspace, launch: Launcher, slow_check: bool
) -> None:
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("0.0.0.0", workspace.health_port))
    squatter.listen(16)
    try:
        env = workspace.env()
        if slow_check:  # the health server's report is then in before Squid's turn
            wrapper, marker = pausing_squid(workspace, "-k parse")
            env = workspace.env(CEPHALOPROXY_SQUID_BIN=str(wrapper))
        run = launch(env)
        assert run.wait_exit(60) == 1
    finally:
        squatter.close()
    assert f"HEALTH_PORT {workspace.health_port} is already in use" in run.stderr
    assert "Container ready" not in run.stdout
    if slow_check:
        assert marker.exists(), run.output  # the check did run, slowly
        assert "Starting Squid proxy" not in run.stdout
    # Otherwise the report races the config check: Squid may have started, but none is left.
    assert run.descendants_left() == []


def test_a_health_server_that_never_reports_is_killed_after_the_start_limit(
    workspace: Workspace, launch: Launcher
) -> None:
    # The entrypoint's copy of the server stops itself before it binds (a hung child).
    (workspace.lib / "entrypoint" / "healthcheck_cli.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\n"
    )
    run = launch()
    run.wait_for_output(r"Starting health server on port")
    started = time.monotonic()
    assert run.wait_exit(HEALTH_START_TIMEOUT + 60) == 1
    elapsed = time.monotonic() - started
    assert (
        f"did not report listening on HEALTH_PORT {workspace.health_port} within {HEALTH_START_TIMEOUT:g} s"
        in run.stderr
    )
    # The contract bound (the 30 s limit), with slack for a loaded machine; never before the limit.
    assert HEALTH_START_TIMEOUT - 0.5 <= elapsed <= HEALTH_START_TIMEOUT + SLACK, elapsed
    # Squid does not wait for the health server: it was up, never declared ready, and is stopped.
    assert re.search(r"Squid started with PID \d+", run.stdout), run.output
    assert "Container ready" not in run.stdout
    assert run.descendants_left() == []


def health_server_pid(entrypoint_pid: int) -> int:
    (pid,) = [
        p.pid
        for p in process_tree(entrypoint_pid)
        if b"entrypoint.healthcheck_cli" in open(f"/proc/{p.pid}/cmdline", "rb").read()
    ]
    return pid


def test_a_dying_health_server_is_restarted_with_backoff_and_counted(
    workspace: Workspace, launch: Launcher
) -> None:
    run = launch()
    run.wait_ready()
    base = f"http://127.0.0.1:{workspace.health_port}"
    for restart, delay in ((1, "0.5"), (2, "1"), (3, "2")):
        os.kill(health_server_pid(run.pid), signal.SIGKILL)
        run.wait_for_output(
            rf"Health server exited unexpectedly \(signal SIGKILL\); restart {restart} in {delay} s",
            30,
            stream="stderr",
        )
        run.wait_for_output(
            rf"Health server restarted \(restart {restart}\), listening on port", 30
        )
        assert wait_for_status(f"{base}/ready", 200, 30) == (200, "READY\n")
    assert run.process.poll() is None


def test_a_health_server_that_cannot_bind_again_ends_the_container(
    workspace: Workspace, launch: Launcher
) -> None:
    run = launch()
    run.wait_ready()
    os.kill(health_server_pid(run.pid), signal.SIGKILL)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        # Take the port in the restart's backoff (0.5 s): the dead server's socket is gone at once.
        assert wait_until(lambda: _try_bind(squatter, workspace.health_port), 0.4, interval=0.01)
        squatter.listen(4)
        assert run.wait_exit(60) == 1
    finally:
        squatter.close()
    assert (
        f"Health server cannot be restarted: HEALTH_PORT {workspace.health_port} is already in use"
        in run.stderr
    )
    assert run.descendants_left() == []


def _try_bind(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("0.0.0.0", port))
    except OSError:
        return False
    return True


def test_cache_dir_unwritable_for_squids_user_fails_ready(
    workspace: Workspace, launch: Launcher
) -> None:
    # As root the entrypoint, Squid and the health server run as UID 1000660000 GID 0: group
    # r-x takes writing away from them (root could still write: the check must not run as root).
    squid_pid, base = ready_run(workspace, launch)
    spool = workspace.runtime_dir("spool")
    os.chmod(spool, 0o550)
    try:
        status, body, _ = http_get(f"{base}/ready")
        assert (status, body) == (503, f"NOT READY\n- cache dir: {spool} is not writable\n")
    finally:
        os.chmod(spool, 0o770)
    assert http_get(f"{base}/ready")[:2] == (200, "READY\n")


def test_a_kid_frozen_in_state_d_fails_ready_and_health_within_the_bound(
    workspace: Workspace, launch: Launcher
) -> None:
    # Hung storage, emulated with the cgroup freezer on the kid only: /proc shows it in state D,
    # "runnable" to a check that looks at the state alone.
    problem = freeze_problem()
    if problem:
        pytest.skip(problem)
    squid_pid, base = ready_run(workspace, launch)
    (kid,) = squid_kids(squid_pid)
    with frozen(kid):
        frozen_at = time.monotonic()
        assert process_state(kid) == "D"
        status, body = wait_for_status(f"{base}/ready", 503, STALL_READY + SLACK)
        assert status == 503, (
            f"/ready still {status} {body!r} {time.monotonic() - frozen_at:.1f} s after the freeze"
        )
        assert (
            f"- proxy port: squid worker pid {kid} made no progress in uninterruptible sleep (D)"
            in body
        )
        status, body = wait_for_status(f"{base}/health", 503, LIVENESS_BOUND + SLACK)
        assert status == 503, (
            f"/health still {status} {body!r} {time.monotonic() - frozen_at:.1f} s after the freeze"
        )
        assert body.startswith(
            f"NOT OK: squid worker pid {kid} made no progress in uninterruptible sleep (D) for 1"
        ), body
    assert wait_for_status(f"{base}/health", 200, 10) == (200, "OK\n")
    assert wait_for_status(f"{base}/ready", 200, 10) == (200, "READY\n")


# A health server that dies (or only closes its report pipe) before it listens: never "listening".
SERVER_EXITS_EARLY = "import sys\nsys.exit(3)\n"
SERVER_CLOSES_ITS_REPORT = (
    "import os, sys, time\n"
    "os.close(int(sys.argv[sys.argv.index('--ready-fd') + 1]))\n"
    "time.sleep(600)\n"
)


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        (SERVER_EXITS_EARLY, r"Health server exited during startup \(exit code 3\)"),
        (
            SERVER_CLOSES_ITS_REPORT,
            r"Health server closed its report pipe without listening on HEALTH_PORT \d+ \(it was killed\)",
        ),
    ],
    ids=["exits", "closes-its-report-pipe"],
)
def test_a_health_server_that_ends_its_report_unheard_fails_startup(
    workspace: Workspace, launch: Launcher, server: str, reason: str
) -> None:
    (workspace.lib / "entrypoint" / "healthcheck_cli.py").write_text(server)
    run = launch()
    assert run.wait_exit(60) == 1, run.output
    assert re.search(reason, run.stderr), run.stderr
    assert "Container ready" not in run.stdout
    assert run.descendants_left() == []


def test_a_restarted_health_server_that_dies_before_listening_is_not_restarted(
    workspace: Workspace, launch: Launcher
) -> None:
    run = launch()
    run.wait_ready()
    # From now on every new health server exits before it listens.
    (workspace.lib / "entrypoint" / "healthcheck_cli.py").write_text(SERVER_EXITS_EARLY)
    os.kill(health_server_pid(run.pid), signal.SIGKILL)
    run.wait_for_output(
        r"restart failed: Health server exited during startup \(exit code 3\).*; restart 3 in 2 s",
        30,
        stream="stderr",
    )
    assert "Health server restarted" not in run.stdout
    assert not _listening(workspace.health_port)  # nothing answers the probes meanwhile
    assert run.process.poll() is None  # it keeps trying, with backoff


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except OSError:
        return False
    return True
