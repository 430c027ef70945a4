"""Hostile pid files: the parser over arbitrary bytes; a FIFO, symlinks, 10 MB, 5000 digits, a directory
and a socket at the pid file's path for the reader, the real health server and the real entrypoint."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import given, strategies as st

from entrypoint.pid_file import PID_MAX, NoPidInFile, PidFileError, parse_pid, read_pid_file
from entrypoint.harness import entrypoint_with_rlimit
from entrypoint.testing import (  # noqa: F401 - fixtures
    Launcher,
    Workspace,
    EntrypointRun,
    free_port,
    http_get,
    launch,
    python_for_child,
    squid_available,
    wait_until,
    workspace,
    _child_user_options,
)

# Any read of a hostile pid file takes milliseconds; a hang fails by assertion after this.
READ_BOUND = 10.0
# The entrypoint's own start (an interpreter on 2 shared cores) up to its exit 1.
STARTUP_BOUND = 30.0
# The most a process reading /dev/zero may map before it fails (old code grew to 6.9 GB).
MEMORY_CAP = 1024 * 1024 * 1024

_SQUID_WRITES = re.compile(rb"[ \t\r\n]*([0-9]+)[ \t\r\n]*")


# -- the parser ------------------------------------------------------------------------------------
pid_texts = st.one_of(
    st.binary(max_size=80),
    st.integers(-10, 10**9).map(lambda n: f"{n}\n".encode()),
    st.tuples(
        st.sampled_from([b"", b" ", b"\t", b"\n", b"\r\n", b"\x0b", b"\xc2\xa0", b"+", b"0"]),
        st.integers(0, 2 * PID_MAX),
        st.sampled_from([b"", b"\n", b" \n", b"\n\n", b"x", b"\x00"]),
    ).map(lambda t: t[0] + str(t[1]).encode() + t[2]),
    st.text("0123456789", min_size=4290, max_size=4400).map(str.encode),
    st.text("\u0660\u0661\uff11\u00b2_0123456789 \n", max_size=12).map(lambda s: s.encode("utf-8")),
)


@given(pid_texts)
def test_parse_pid_never_raises_and_accepts_only_what_squid_writes(data: bytes) -> None:
    pid = parse_pid(data)
    match = _SQUID_WRITES.fullmatch(data)
    digits = match.group(1) if match else b""
    squids = (
        bool(digits)
        and not digits.startswith(b"0")
        and len(digits) <= 7
        and 1 <= int(digits) <= PID_MAX
    )
    assert pid == (int(digits) if squids else None), data


@given(st.integers(1, PID_MAX))
def test_every_pid_squid_can_write_is_read_back(pid: int) -> None:
    assert parse_pid(f"{pid}\n".encode()) == pid
    assert parse_pid(f"{pid}".encode()) == pid


# -- hostile files ---------------------------------------------------------------------------------
def _plant_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))  # the socket file stays after the close


def _plant_zero_device(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 5))  # what /dev/zero is
    except PermissionError:
        pytest.skip("needs CAP_MKNOD to make a device node")


# kind -> (how to make it at the path, what the message must say, removable as a stale pid file)
HOSTILE: dict[str, tuple[Callable[[Path], None], str, bool]] = {
    "fifo": (
        lambda p: (os.mkfifo(p), os.chmod(p, 0o666)),
        r"is a FIFO \(named pipe\), not a regular file",
        False,
    ),
    "symlink_to_dev_zero": (
        lambda p: p.symlink_to("/dev/zero"),
        r"is a symlink \(to '/dev/zero'\)",
        False,
    ),
    "symlink_to_a_pid": (
        lambda p: (
            p.with_name("real.pid").write_text("1\n"),
            p.symlink_to(p.with_name("real.pid")),
        ),
        r"is a symlink \(to '.*real\.pid'\), not a regular file: refused",
        False,
    ),
    "directory": (
        lambda p: (p.mkdir(), os.chmod(p, 0o775)),
        r"is a directory, not a regular file",
        False,
    ),
    "socket": (_plant_socket, r"is a socket, not a regular file", False),
    "zero_device": (_plant_zero_device, r"is a character device, not a regular file", False),
    "ten_megabytes": (
        lambda p: (p.write_bytes(b"1" * (10 * 1024 * 1024)), os.chmod(p, 0o664)),
        r"holds no pid \(it is larger than the 64 bytes a pid file holds\)",
        True,
    ),
    "five_thousand_digits": (
        lambda p: (p.write_text("9" * 5000 + "\n"), os.chmod(p, 0o664)),
        r"holds no pid \(it is larger than the 64 bytes a pid file holds\)",
        True,
    ),
    "beyond_pid_max": (
        lambda p: (p.write_text("4194305\n"), os.chmod(p, 0o664)),
        r"holds no pid \(8 bytes that are not a pid 1-4194304\)",
        True,
    ),
}


def _unblock(path: Path) -> None:
    """Let a reader stuck in open() on a FIFO go (a writer appears), so no thread stays blocked."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_pid_file_is_refused_by_name_in_bounded_time(tmp_path: Path, kind: str) -> None:
    plant, message, removable = HOSTILE[kind]
    path = tmp_path / "squid.pid"
    plant(path)
    outcome: list[BaseException | int | None] = []

    def read() -> None:
        try:
            outcome.append(read_pid_file(path))
        except BaseException as error:  # noqa: BLE001 - the outcome is the assertion
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)
    started = time.monotonic()
    reader.start()
    reader.join(READ_BOUND)
    if reader.is_alive():
        _unblock(path)
        pytest.fail(f"read_pid_file({path}) still blocked after {READ_BOUND} s ({kind})")
    (error,) = outcome
    assert isinstance(error, NoPidInFile if removable else PidFileError), repr(error)
    assert isinstance(error, NoPidInFile) == removable
    assert re.search(rf"^pid file {re.escape(str(path))} {message}", str(error)), str(error)
    assert time.monotonic() - started < READ_BOUND


def test_absent_and_valid_pid_files(tmp_path: Path) -> None:
    path = tmp_path / "squid.pid"
    assert read_pid_file(path) is None
    path.write_text("4194304\n")
    assert read_pid_file(path) == PID_MAX
    path.write_text("")  # Squid between its open() and its write()
    with pytest.raises(NoPidInFile, match="it is empty"):
        read_pid_file(path)


# -- the health server -----------------------------------------------------------------------------
def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


@pytest.fixture
def hostile_health_server(workspace: Workspace) -> Iterator[Callable[[str], tuple[str, Path]]]:
    """Starts the real health server (as the entrypoint's user, memory capped) reading a hostile pid file."""
    servers: list[subprocess.Popen[bytes]] = []
    paths: list[Path] = []

    def start(kind: str) -> tuple[str, Path]:
        run_dir = workspace.make_dir(workspace.var / "run")
        pid_file = run_dir / "squid.pid"
        HOSTILE[kind][0](pid_file)
        paths.append(pid_file)
        config = workspace.etc / "squid.conf"
        config.write_text("http_port 3128\n")
        os.chmod(config, 0o664)
        port = free_port()
        environment = {
            "PYTHONPATH": str(workspace.lib),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PATH": os.environ.get("PATH", ""),
        }
        server = subprocess.Popen(  # type: ignore[call-overload]
            [
                python_for_child(),
                str(workspace.bin / "healthcheck.py"),
                "--port",
                str(port),
                "--pid-file",
                str(pid_file),
                "--squid-comm",
                "squid",
                "--proxy-port",
                str(free_port()),
                "--cache-dir",
                str(run_dir),
                "--config",
                str(config),
                "--log-level",
                "DEBUG",
            ],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(workspace.root),
            preexec_fn=_limit_memory,
            **_child_user_options(),
        )
        servers.append(server)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                return True
            except OSError:
                return False

        assert wait_until(listening, 30), "the health server did not listen within 30 s"
        return f"http://127.0.0.1:{port}", pid_file

    try:
        yield start
    finally:
        for path in paths:
            _unblock(path)
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_the_health_server_answers_503_naming_a_hostile_pid_file_in_bounded_time(
    hostile_health_server: Callable[[str], tuple[str, Path]],
    kind: str,
) -> None:
    base, pid_file = hostile_health_server(kind)
    for endpoint in ("/health", "/ready"):
        started = time.monotonic()
        try:
            status, body, _ = http_get(base + endpoint, timeout=READ_BOUND)
        except OSError as error:
            pytest.fail(
                f"{endpoint} not answered within {READ_BOUND} s with a {kind} pid file: {error}"
            )
        assert time.monotonic() - started < READ_BOUND
        assert status == 503, body
        assert re.search(rf"pid file {re.escape(str(pid_file))} {HOSTILE[kind][1]}", body), body


# -- the entrypoint --------------------------------------------------------------------------------
def _exit_within(run: EntrypointRun, bound: float) -> int:
    try:
        return run.wait_exit(bound)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"the entrypoint did not exit within {bound} s\nSTDOUT:\n{run.stdout}\nSTDERR:\n{run.stderr}"
        )


@pytest.mark.parametrize(
    "kind", sorted(kind for kind, (_, _, removable) in HOSTILE.items() if not removable)
)
def test_startup_exits_1_naming_a_pid_file_that_is_not_a_regular_file(
    workspace: Workspace,
    launch: Launcher,
    kind: str,
) -> None:
    pid_file = workspace.make_dir(workspace.runtime_dir("run")) / "squid.pid"
    HOSTILE[kind][0](pid_file)
    try:
        run = launch(argv=entrypoint_with_rlimit(workspace, "RLIMIT_AS", MEMORY_CAP))
        assert _exit_within(run, STARTUP_BOUND) == 1, run.output
    finally:
        _unblock(pid_file)
    assert re.search(
        rf"\[ERROR\] pid file {re.escape(str(pid_file))} {HOSTILE[kind][1]}.*: remove it",
        run.stdout + run.stderr,
    ), run.output
    assert "Traceback" not in run.output
    assert "Starting Squid proxy" not in run.stdout
    assert run.descendants_left() == []


@pytest.mark.parametrize(
    "kind", sorted(kind for kind, (_, _, removable) in HOSTILE.items() if removable)
)
def test_startup_removes_a_regular_pid_file_that_holds_no_pid(
    workspace: Workspace, launch: Launcher, kind: str
) -> None:
    pid_file = workspace.make_dir(workspace.runtime_dir("run")) / "squid.pid"
    HOSTILE[kind][0](pid_file)
    run = launch()
    run.wait_ready(90)
    message = HOSTILE[kind][1].replace("holds no pid \\(", "it holds no pid: ")
    assert re.search(
        rf"\[WARNING\] Removed stale pid file {re.escape(str(pid_file))} \({message}", run.stdout
    ), run.stdout
    assert "Traceback" not in run.output


def test_sigterm_ends_a_startup_that_meets_a_fifo_pid_file(
    workspace: Workspace, launch: Launcher
) -> None:
    pid_file = workspace.make_dir(workspace.runtime_dir("run")) / "squid.pid"
    HOSTILE["fifo"][0](pid_file)
    try:
        run = launch()
        run.wait_for_output(
            r"Runtime directories are writable|pid file", STARTUP_BOUND, stream="stdout"
        )
        run.process.send_signal(signal.SIGTERM)
        assert _exit_within(run, STARTUP_BOUND) in (0, 1), run.output
    finally:
        _unblock(pid_file)
    assert "Traceback" not in run.output
    assert run.descendants_left() == []
