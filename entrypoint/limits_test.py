"""Numbers past int()'s 4300-digit limit (env, config, `healthcheck --check`, SIGHUP) and a real RLIMIT_NPROC
that refuses PID 1's forks (startup, reload): a warning, an exit 1 or a `Reload skipped`, never a traceback."""

from __future__ import annotations

import signal
import subprocess

import pytest

from entrypoint.harness import entrypoint_with_rlimit
from entrypoint.testing import (  # noqa: F401 - fixtures
    Launcher,
    Workspace,
    EntrypointRun,
    _child_user_options,
    certgen_bin,
    free_port,
    launch,
    python_for_child,
    squid_bin,
    squid_available,
    wait_for_status,
    workspace,
)

LONG = "1" * 5000
PROCESS_LIMIT_MESSAGE = (
    "the container's process limit (RLIMIT_NPROC / pids.max) is reached: raise it"
)
EXIT_BOUND = 60.0


def port_config(workspace: Workspace, listen: str) -> str:
    return (
        f"http_port {listen}\n"
        f"pid_filename {workspace.runtime_dir('run')}/squid.pid\n"
        "http_access allow localhost\nhttp_access deny all\n"
        "cache_log /dev/stderr\naccess_log stdio:/dev/stdout\nlogfile_rotate 0\n"
        "visible_hostname limits-test\nshutdown_lifetime 1 seconds\npinger_enable off\n"
        "netdb_filename none\n"
    )


def exit_within(run: EntrypointRun, bound: float = EXIT_BOUND) -> int:
    try:
        return run.wait_exit(bound)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"the entrypoint did not exit within {bound} s\nSTDOUT:\n{run.stdout}\nSTDERR:\n{run.stderr}"
        )


def assert_no_traceback(run: EntrypointRun) -> None:
    assert "Traceback" not in run.output and "Unexpected error" not in run.output, run.output


# -- over-long numbers ---------------------------------------------------------------------------------
def test_a_5000_digit_squid_port_warns_and_is_ignored(
    workspace: Workspace, launch: Launcher
) -> None:
    workspace.write_custom_config(port_config(workspace, f"127.0.0.1:{workspace.squid_port}"))
    run = launch(workspace.env(SQUID_PORT=LONG))
    run.wait_ready()
    assert (
        f"[WARNING] Invalid SQUID_PORT={'1' * 80!r}... (5000 characters): expected a TCP port number 1-65535;"
        in run.stdout
    )
    assert_no_traceback(run)


def test_a_5000_digit_http_port_in_the_config_exits_1_with_a_config_error(
    workspace: Workspace, launch: Launcher
) -> None:
    workspace.write_custom_config(port_config(workspace, f"127.0.0.1:{LONG}"))
    run = launch()
    assert exit_within(run) == 1, run.output
    assert (
        f"{workspace.custom_config} line 1: cannot read the port of 'http_port 127.0.0.1:{'1' * 70}...' (5010 characters)"
    ) in run.stderr, run.output
    assert_no_traceback(run)
    assert run.descendants_left() == []


def test_a_reload_to_a_5000_digit_port_is_skipped(workspace: Workspace, launch: Launcher) -> None:
    workspace.write_custom_config(port_config(workspace, f"127.0.0.1:{workspace.squid_port}"))
    run = launch()
    squid_pid = run.wait_ready()
    workspace.write_custom_config(port_config(workspace, f"127.0.0.1:{LONG}"))
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(
        r"Reload skipped, Squid keeps its current config: Squid config .* cannot read the port of",
        60,
        "stderr",
    )
    assert_no_traceback(run)
    assert wait_for_status(f"http://127.0.0.1:{workspace.health_port}/ready", 200, 30)[0] == 200
    assert f"Squid reconfigured (PID {squid_pid} kept)" not in run.stdout


def healthcheck_check(
    workspace: Workspace, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {**workspace.env(**env), "PYTHONPATH": str(workspace.lib)}
    return subprocess.run(  # type: ignore[call-overload]
        [python_for_child(), str(workspace.bin / "healthcheck.py"), "--check", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(workspace.root),
        **_child_user_options(),
    )


def test_check_with_a_5000_digit_health_port_warns_and_asks_the_default(
    workspace: Workspace, squid_available: None
) -> None:
    result = healthcheck_check(workspace, HEALTH_PORT=LONG)
    assert (
        result.stderr
        == f"Invalid HEALTH_PORT={'1' * 80!r}... (5000 characters): expected a TCP port number 1-65535; using default 8080\n"
    )
    assert result.stdout.startswith("http://127.0.0.1:8080/health: "), result.stdout
    assert result.returncode in (0, 1)


def test_check_with_a_5000_digit_port_argument_is_a_usage_error(
    workspace: Workspace, squid_available: None
) -> None:
    result = healthcheck_check(workspace, "--port", LONG)
    assert result.returncode == 2, result
    assert (
        "argument --port: '" + "1" * 80 + "'... (5000 characters) is not a TCP port number 1-65535"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


# -- a real process limit --------------------------------------------------------------------------
def test_a_refused_fork_at_startup_exits_1_naming_the_process_limit(
    workspace: Workspace, launch: Launcher
) -> None:
    # Limit 1: the entrypoint is its user's one process, so every fork it makes is refused (EAGAIN).
    run = launch(argv=entrypoint_with_rlimit(workspace, "RLIMIT_NPROC", 1))
    assert exit_within(run) == 1, run.output
    assert PROCESS_LIMIT_MESSAGE in run.stderr, run.output
    assert "[ERROR] cannot start " in run.stderr, run.output
    assert_no_traceback(run)
    assert "Starting Squid proxy" not in run.stdout


def set_process_limit(pid: int, soft: int) -> int:
    """Set RLIMIT_NPROC's soft limit of a running process; returns the old one.

    Set as the process's own user: root here may lack CAP_SYS_RESOURCE, which prlimit() on
    another user's process needs.
    """
    step = (
        f"import resource; old, hard = resource.prlimit({pid}, resource.RLIMIT_NPROC); "
        f"resource.prlimit({pid}, resource.RLIMIT_NPROC, ({soft}, hard)); print(old)"
    )
    result = subprocess.run(  # type: ignore[call-overload]
        [python_for_child(), "-c", step],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
        **_child_user_options(),
    )
    return int(result.stdout)


def test_a_refused_fork_at_reload_skips_it_and_the_next_reload_works(
    workspace: Workspace, launch: Launcher
) -> None:
    workspace.write_custom_config(port_config(workspace, f"127.0.0.1:{workspace.squid_port}"))
    run = launch()
    squid_pid = run.wait_ready()
    before = set_process_limit(run.pid, 1)  # Squid and the health server run on; PID 1 may not fork
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(
        # No thread to read the config in comes first now (the read never runs on the event loop).
        r"Reload skipped, Squid keeps its current config: cannot start a thread for reading the Squid config \S+: "
        + r"the container's process limit \(RLIMIT_NPROC / pids\.max\) is reached: raise it",
        60,
        "stderr",
    )
    assert_no_traceback(run)
    set_process_limit(run.pid, before)
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(rf"Squid reconfigured \(PID {squid_pid} kept\)", 60)
    assert wait_for_status(f"http://127.0.0.1:{workspace.health_port}/health", 200, 30)[0] == 200


# Every way PID 1 forks, each with RLIMIT_NPROC at 1 (as the entrypoint's user): the error type its
# caller turns into an exit 1 or a `Reload skipped`, a message naming the limit, and no pipe left open.
FORK_STEPS = r"""
import asyncio, logging, os, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
from entrypoint import tls
from entrypoint.health_process import HealthError, HealthProcess
from entrypoint.log_relay import relayed_spawn
from entrypoint.output_sink import OutputSink
from entrypoint.processes import ChildProcesses
from entrypoint.settings import load_settings
from entrypoint.squid_config import ActiveConfig, CertDb, Directive
from entrypoint.squid_process import SquidCommands, SquidError

async def main():
    squid, certgen, scratch = (Path(arg) for arg in sys.argv[1:4])
    log = logging.getLogger("fork-steps")
    children = ChildProcesses(log)
    children.install()
    sinks = (OutputSink(1, "stdout"), OutputSink(2, "stderr"))
    cache = Directive(1, "cache_dir", ("ufs", str(scratch / "cache"), "10", "16", "256"))
    config = ActiveConfig(scratch / "squid.conf", scratch / "squid.conf", True, (cache,))
    commands = SquidCommands(squid, children, log)
    fds = len(os.listdir("/proc/self/fd"))
    steps = {
        "squid -k parse": commands.check_config(config),
        "squid -z": commands.initialise_cache(config),
        "Squid": commands.start(config, sinks),
        "certgen": tls.ensure_cert_db(children, certgen, CertDb(scratch / "ssl_db", "4MB"), "0" * 64, log),
    }
    for name, step in steps.items():
        try:
            await step
            print(f"{name}: started")
        except (SquidError, tls.TlsError) as error:
            print(f"{name}: {type(error).__name__}: {error}")
    health = HealthProcess(load_settings({})[0], children, log, relayed_spawn(children, sinks))
    health.start(config)
    try:
        await health.wait_listening()
        print("health server: started")
    except HealthError as error:
        print(f"health server: {type(error).__name__}: {error}")
    await asyncio.sleep(0.1)  # transports close on the next loop iterations
    print(f"fds left open: {len(os.listdir('/proc/self/fd')) - fds}")

asyncio.run(main())
"""


def test_every_fork_of_pid_1_refused_by_rlimit_nproc_names_the_limit(
    workspace: Workspace, squid_available: None
) -> None:
    scratch = workspace.make_dir(workspace.var / "scratch")
    result = subprocess.run(  # type: ignore[call-overload]
        [python_for_child(), "-c", FORK_STEPS, str(squid_bin()), str(certgen_bin()), str(scratch)],
        env={"PYTHONPATH": str(workspace.lib), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(workspace.root),
        **_child_user_options(),
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert lines.pop("fds left open") == "0", result.stdout
    expected_types = {
        "squid -k parse": "SquidError",
        "squid -z": "SquidError",
        "Squid": "SquidError",
        "certgen": "TlsError",
        "health server": "HealthError",
    }
    assert {name: line.split(":", 1)[0] for name, line in lines.items()} == expected_types, (
        result.stdout
    )
    for name, line in lines.items():
        assert PROCESS_LIMIT_MESSAGE in line, line
    assert (
        "cannot start squid -k parse: " in lines["squid -k parse"]
        and "cannot start Squid: " in lines["Squid"]
    )
    assert "cannot start the health server: " in lines["health server"]


def _one_process() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))


def test_a_health_server_that_cannot_start_its_sampler_thread_says_why(
    workspace: Workspace, squid_available: None
) -> None:
    # Threads count against RLIMIT_NPROC: at 1 the server's sampler thread is refused.
    result = subprocess.run(  # type: ignore[call-overload]
        [
            python_for_child(),
            str(workspace.bin / "healthcheck.py"),
            "--port",
            str(free_port()),
            "--pid-file",
            str(workspace.var / "squid.pid"),
        ],
        env={"PYTHONPATH": str(workspace.lib), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(workspace.root),
        preexec_fn=_one_process,
        **_child_user_options(),
    )
    assert result.returncode == 1, result
    assert (
        "Health server cannot start its sampler thread" in result.stderr
        and PROCESS_LIMIT_MESSAGE in result.stderr
    ), result.stderr
    assert "Traceback" not in result.stderr
