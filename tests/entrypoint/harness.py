"""Test and benchmark support without pytest: real Squid location, workspaces, running the entrypoint.

Everything here starts real processes; `EntrypointRun.cleanup` kills every process of the
run's session, so a failing test leaves nothing behind. The pytest fixtures are in testing.py.
"""

from __future__ import annotations

import dataclasses
import http.server
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict

from tools.squid.squid_under_test import squid_under_test

# The runtime package under test (tests/entrypoint/ -> entrypoint/).
PACKAGE_DIR = Path(__file__).resolve().parents[2] / "entrypoint"
# When the tests run as root, the entrypoint runs as this OpenShift-style user.
UNPRIVILEGED_UID = 1000660000
UNPRIVILEGED_GID = 0


# -- Squid under test ---------------------------------------------------------------------
# Which Squid: the shared seam in //tools/squid (CEPHALOPROXY_SQUID_ROOT).
def squid_root() -> Path:
    return squid_under_test().root


def squid_bin() -> Path:
    return squid_under_test().squid


def certgen_bin() -> Path:
    return squid_under_test().certgen


def squid_path_directives() -> str:
    """Directives pointing Squid at its data files when they are not at the compiled-in paths."""
    return squid_under_test().data_directives()


def squid_version() -> tuple[int, ...]:
    output = subprocess.run(
        [str(squid_bin()), "-v"], capture_output=True, text=True, timeout=30
    ).stdout
    match = re.search(r"Version (\d+)\.(\d+)", output)
    return tuple(int(x) for x in match.groups()) if match else (0, 0)


def search_group(pattern: str, text: str, flags: int = 0) -> str:
    """Group 1 of `pattern`'s first match in `text`; fails naming the pattern and the text's end when none."""
    match = re.search(pattern, text, flags)
    assert match is not None, f"no match for {pattern!r} in:\n{text[-2500:]}"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def running_as_root() -> bool:
    return os.geteuid() == 0


# -- where the entrypoint runs ----------------------------------------------------------------
class ChildUser(TypedDict, total=False):
    """subprocess keyword arguments that choose a child's user (empty: ours)."""

    user: int
    group: int
    extra_groups: list[int]


def _child_user_options() -> ChildUser:
    if not running_as_root():
        return {}
    return {"user": UNPRIVILEGED_UID, "group": UNPRIVILEGED_GID, "extra_groups": []}


_python_for_child: str | None = None


def python_for_child() -> str:
    """An interpreter the entrypoint's user can execute (ours may live under /root)."""
    global _python_for_child
    if _python_for_child is None:
        candidates = [sys.executable, "/usr/bin/python3"]
        for candidate in candidates:
            try:
                result = subprocess.run(
                    [candidate, "-c", "import asyncio, ssl"],
                    timeout=60,
                    capture_output=True,
                    **_child_user_options(),
                )
            except (OSError, subprocess.SubprocessError):
                continue
            if result.returncode == 0:
                _python_for_child = candidate
                break
        else:
            raise RuntimeError(f"no Python usable as UID {UNPRIVILEGED_UID}: tried {candidates}")
    return _python_for_child


def unprivileged_access_problem() -> str | None:
    """Why the unprivileged user cannot run Squid here (e.g. runfiles under /root), or None."""
    if not running_as_root():
        return None
    try:
        python_for_child()
        result = subprocess.run(
            [str(squid_bin()), "-v"],
            capture_output=True,
            timeout=60,
            **_child_user_options(),
        )
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        return f"UID {UNPRIVILEGED_UID} cannot run Squid/Python here: {error}"
    if result.returncode != 0:
        return f"UID {UNPRIVILEGED_UID} cannot run {squid_bin()}: {result.stderr[-300:]!r}"
    return None


class Workspace:
    """A temp dir laid out like the image (bin/, lib/entrypoint, etc/squid, var/...), GID-0 writable."""

    def __init__(self, bytecode: bool = False) -> None:
        """`bytecode`: precompile the package as the image does (benchmarks); tests import source."""
        # As root the files must be reachable by the unprivileged user: Bazel's TEST_TMPDIR
        # may live under /root, so use /tmp then.
        base = "/tmp" if running_as_root() else None
        self.root = Path(tempfile.mkdtemp(prefix="cephaloproxy-test-", dir=base))
        self.make_dir(self.root)
        self.bin = self.make_dir(self.root / "bin")
        self.lib = self.make_dir(self.root / "lib")
        self.etc = self.make_dir(self.root / "etc/squid")
        self.tls_dir = self.etc / "ssl_cert"
        self.var = self.make_dir(self.root / "var")
        # The image layout: scripts in bin/, the package on PYTHONPATH in lib/.
        shutil.copytree(
            PACKAGE_DIR,
            self.lib / "entrypoint",
            ignore=shutil.ignore_patterns("__pycache__", "*_test.py"),
        )
        for script in ("entrypoint.py", "healthcheck.py"):
            shutil.copy2(PACKAGE_DIR / script, self.bin / script)
        if (
            bytecode
        ):  # unchecked-hash .pyc, like the image's layer, by the interpreter that imports them
            subprocess.run(
                [
                    python_for_child(),
                    "-m",
                    "compileall",
                    "-q",
                    "--invalidation-mode",
                    "unchecked-hash",
                    str(self.lib / "entrypoint"),
                ],
                check=True,
                timeout=120,
            )
        default = (PACKAGE_DIR / "squid.conf.default").read_text() + squid_path_directives()
        self.default_config = self.etc / "squid.conf.default"
        self.default_config.write_text(default)
        for path in (self.lib, self.bin, self.etc):
            self.share_tree(path)
        self.squid_port = free_port()
        self.health_port = free_port()
        while self.health_port == self.squid_port:
            self.health_port = free_port()

    @staticmethod
    def make_dir(path: Path, mode: int = 0o770) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        if running_as_root():
            os.chown(path, 0, UNPRIVILEGED_GID)
        return path

    @staticmethod
    def share_tree(path: Path) -> None:
        """Readable by the unprivileged user (group 0), like files in the image."""
        for dirpath, _dirnames, filenames in os.walk(path):
            os.chmod(dirpath, 0o775)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o664)

    def runtime_dir(self, name: str) -> Path:
        return self.var / name

    @property
    def custom_config(self) -> Path:
        return self.etc / "squid.conf"

    def write_custom_config(self, text: str) -> Path:
        self.custom_config.write_text(text + "\n" + squid_path_directives())
        os.chmod(self.custom_config, 0o664)
        return self.custom_config

    def env(self, **overrides: str) -> dict[str, str]:
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(
                (
                    "CEPHALOPROXY_",
                    "SQUID_",
                    "HEALTH_",
                    "LOG_LEVEL",
                    "SHUTDOWN_",
                    "PYTHON",
                    "CONFIG_",
                )
            )
        }
        environment.update(
            {
                "PYTHONPATH": str(self.lib),
                "PYTHONDONTWRITEBYTECODE": "1",
                "SQUID_PORT": str(self.squid_port),
                "HEALTH_PORT": str(self.health_port),
                "CEPHALOPROXY_SQUID_BIN": str(squid_bin()),
                "CEPHALOPROXY_CERTGEN_BIN": str(certgen_bin()),
                "CEPHALOPROXY_CONFIG": str(self.custom_config),
                "CEPHALOPROXY_DEFAULT_CONFIG": str(self.default_config),
                "CEPHALOPROXY_TLS_DIR": str(self.tls_dir),
                "CEPHALOPROXY_RUN_DIR": str(self.runtime_dir("run")),
                "CEPHALOPROXY_LOG_DIR": str(self.runtime_dir("log")),
                "CEPHALOPROXY_LIB_DIR": str(self.runtime_dir("lib")),
                "CEPHALOPROXY_SPOOL_DIR": str(self.runtime_dir("spool")),
                "CEPHALOPROXY_CACHE_DIR": str(self.runtime_dir("cache")),
                # Tests send SIGHUP and count reloads: watch mode is what watch_e2e_test turns on.
                "CONFIG_RELOAD": "signal",
            }
        )
        environment.update(overrides)
        return environment

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# -- processes ---------------------------------------------------------------------------------
def session_processes(session_id: int) -> list[int]:
    """Live (non-zombie) pids whose session is `session_id`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()
        state, session = fields[0], int(fields[3])
        if session == session_id and state != "Z":
            pids.append(int(entry))
    return pids


def process_state(pid: int) -> str | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()[0]


def process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Uid in /proc/{pid}/status")


def entrypoint_with_rlimit(workspace: Workspace, name: str, value: int) -> list[str]:
    """The entrypoint's command line, started with the resource limit `name` (e.g. "RLIMIT_NPROC") at `value`."""
    step = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.{name}, ({value}, {value})); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    python = python_for_child()
    return [python, "-c", step, python, str(workspace.bin / "entrypoint.py")]


def catches(pid: int, signum: int) -> bool:
    """Whether `pid` has a handler installed for `signum` (SigCgt in /proc/pid/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16
    )
    return bool(caught & (1 << (signum - 1)))


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class _Collector(threading.Thread):
    def __init__(self, stream, sink: list[str], changed: threading.Condition) -> None:
        super().__init__(daemon=True)
        self.stream, self.sink, self.changed = stream, sink, changed

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            with self.changed:
                self.sink.append(raw.decode("utf-8", errors="replace"))
                self.changed.notify_all()


def give_pipe_to(fd: int, uid: int | None) -> None:
    """Make a pipe `uid`'s, as runc does with a container's stdio (fixStdioPermissions): the
    entrypoint then reopens it through /proc, the image's non-blocking path (output_sink)."""
    if uid is None or not running_as_root() or not stat.S_ISFIFO(os.fstat(fd).st_mode):
        return
    os.fchown(fd, uid, -1)


def describe_processes(pids: list[int]) -> str:
    described = []
    for pid in pids:
        try:
            command = (
                Path(f"/proc/{pid}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
            described.append(f"{pid} {command[:80]}")
        except OSError:
            described.append(f"{pid} (gone)")
    return "; ".join(described) or "no process left"


def describe_returncode(code: int | None) -> str:
    if code is None:
        return "still running"
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


class EntrypointRun:
    """The real entrypoint (image layout) as a child in its own session, output collected."""

    def __init__(
        self,
        workspace: Workspace,
        env: Mapping[str, str],
        argv: list[str] | None = None,
        stdout: int | None = None,
        user: tuple[int, int] | None = None,
    ) -> None:
        """`stdout`: an fd to give the entrypoint as its stdout instead of a collected pipe.

        `user`: (uid, gid) to run as exactly (root only); by default the unprivileged user.
        """
        self.workspace = workspace
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._changed = threading.Condition()
        command = argv or [python_for_child(), str(workspace.bin / "entrypoint.py")]
        options: ChildUser = (
            _child_user_options()
            if user is None
            else {"user": user[0], "group": user[1], "extra_groups": []}
        )
        out_read, out_write = os.pipe() if stdout is None else (-1, stdout)
        err_read, err_write = os.pipe()
        for fd in (out_write, err_write):
            give_pipe_to(fd, options.get("user"))
        try:
            self.process = subprocess.Popen(
                command,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out_write,
                stderr=err_write,
                start_new_session=True,
                cwd=str(workspace.root),
                **options,
            )
        finally:
            os.close(err_write)
            if stdout is None:
                os.close(out_write)
        self.started_at = time.monotonic()
        self._readers: list[threading.Thread] = [
            _Collector(os.fdopen(err_read, "rb"), self.stderr_lines, self._changed)
        ]
        if stdout is None:
            self._readers.append(
                _Collector(os.fdopen(out_read, "rb"), self.stdout_lines, self._changed)
            )
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdout(self) -> str:
        with self._changed:
            return "".join(self.stdout_lines)

    @property
    def stderr(self) -> str:
        with self._changed:
            return "".join(self.stderr_lines)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def wait_for_output(
        self, pattern: str, timeout: float = 60.0, stream: str = "stdout"
    ) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        exited_at: float | None = None
        with self._changed:
            while True:
                lines = self.stdout_lines if stream == "stdout" else self.stderr_lines
                match = regex.search("".join(lines))
                if match:
                    return match
                now = time.monotonic()
                code = self.process.poll()
                if code is not None and exited_at is None:
                    exited_at = now
                # Dead entrypoint: report at once, after a short grace for its last output
                # (an orphaned grandchild may hold the pipes open forever).
                if exited_at is not None and (
                    not any(r.is_alive() for r in self._readers) or now - exited_at > 2.0
                ):
                    raise AssertionError(
                        f"{pattern!r} not seen in {stream}: the entrypoint exited"
                        f" ({describe_returncode(code)}) while the test waited"
                        f"\nSTDOUT:\n{''.join(self.stdout_lines)}\nSTDERR:\n{''.join(self.stderr_lines)}"
                    )
                if now >= deadline:
                    raise AssertionError(
                        f"{pattern!r} not seen in {stream} within {timeout} s (entrypoint still running)"
                        f"\nSTDOUT:\n{''.join(self.stdout_lines)}\nSTDERR:\n{''.join(self.stderr_lines)}"
                    )
                self._changed.wait(min(deadline - now, 0.2))

    def wait_ready(self, timeout: float = 90.0) -> int:
        """Waits for `Container ready`; returns the Squid pid from `Squid started with PID`."""
        self.wait_for_output(r"Container ready, entering monitoring loop", timeout)
        return int(self.wait_for_output(r"Squid started with PID (\d+)", 1).group(1))

    def wait_exit(self, timeout: float) -> int:
        """The exit code; an AssertionError (never a hang) when it is still running after `timeout`."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the entrypoint (PID {self.pid}) did not exit within {timeout} s; its session:"
                f" {describe_processes(session_processes(self.pid))}"
                f"\nSTDOUT:\n{self.stdout[-3000:]}\nSTDERR:\n{self.stderr[-3000:]}"
            ) from None
        for reader in self._readers:
            reader.join(10)
        return code

    def descendants_left(self) -> list[int]:
        return session_processes(self.pid)

    def cleanup(self) -> None:
        """Stop the run whatever state it is in, then kill anything left in its session."""
        if self.process.poll() is None:
            for _ in range(2):  # the second signal forces the kill
                try:
                    self.process.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        for pid in session_processes(self.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for reader in self._readers:
            reader.join(10)


# -- HTTP ---------------------------------------------------------------------------------------
def http_get(
    url: str, timeout: float = 10.0, proxy: str | None = None, method: str = "GET"
) -> tuple[int, str, Mapping[str, str]]:
    handlers = [urllib.request.ProxyHandler({"http": proxy} if proxy else {})]
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, method=method)
    try:
        with opener.open(request, timeout=timeout) as response:
            return (
                response.status,
                response.read().decode("utf-8", "replace"),
                dict(response.headers),
            )
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace"), dict(error.headers)


def wait_for_status(url: str, status: int, timeout: float = 60.0) -> tuple[int, str]:
    last: tuple[int, str] = (0, "")

    def probe() -> bool:
        nonlocal last
        try:
            code, body, _ = http_get(url, timeout=5)
            last = (code, body)
        except OSError as error:
            last = (0, str(error))
        return last[0] == status

    wait_until(probe, timeout, interval=0.1)
    return last


@dataclasses.dataclass
class LocalHttpServer:
    body: str
    server: http.server.ThreadingHTTPServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def start_local_http_server(body: str, cache_control: str = "no-store") -> LocalHttpServer:
    """An origin answering every GET with `body` (`cache_control`: what Squid may cache; none by default)."""
    payload = body.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", cache_control)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return LocalHttpServer(body, server, thread)


def proxies_through(port: int, path: str = "/") -> bool:
    """Whether the proxy on 127.0.0.1:`port` fetches `path` from a fresh local origin."""
    origin = start_local_http_server("through")
    try:
        return http_get(
            f"http://127.0.0.1:{origin.port}{path}", timeout=10, proxy=f"http://127.0.0.1:{port}"
        )[:2] == (200, "through")
    except OSError:
        return False
    finally:
        origin.close()


# A stand-in for the Squid binary that writes a marker (its pid) and pauses in one mode, then
# runs the real Squid (exec: the pid and the process name become Squid's own). Tests act while
# that step is under way.
PAUSING_SQUID = """#!{python}
import os, sys, time
REAL, MODE, MARKER, PAUSE = {real!r}, {mode!r}, {marker!r}, {pause!r}
args = sys.argv[1:]
if args[:len(MODE.split())] == MODE.split():
    with open(MARKER + ".tmp", "w") as handle:
        handle.write(str(os.getpid()))
    os.rename(MARKER + ".tmp", MARKER)
    time.sleep(PAUSE)
os.execv(REAL, [REAL, *args])
"""


def pausing_squid(workspace: Workspace, mode: str, pause: float = 3.0) -> tuple[Path, Path]:
    """(wrapper to use as CEPHALOPROXY_SQUID_BIN, marker written when `mode` starts)."""
    marker = workspace.var / "paused"
    wrapper = workspace.bin / "squid"
    wrapper.write_text(
        PAUSING_SQUID.format(
            python=python_for_child(),
            real=str(squid_bin()),
            mode=mode,
            marker=str(marker),
            pause=pause,
        )
    )
    os.chmod(wrapper, 0o775)
    return wrapper, marker


PAYLOAD_CHUNK = b"x" * 1024


def start_slow_origin() -> LocalHttpServer:
    """An origin where GET /<seconds> sends seconds * 10 KiB over that many seconds (Content-Length set)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            chunks = int(float(self.path.strip("/") or "0") * 10)
            self.send_response(200)
            self.send_header("Content-Length", str(chunks * len(PAYLOAD_CHUNK)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            try:
                for _ in range(chunks):
                    self.wfile.write(PAYLOAD_CHUNK)
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass  # the proxy cut the transfer: what the shutdown tests provoke

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return LocalHttpServer("", server, thread)


# -- PID 1 of its own pid namespace, as under a container runtime (root only) -------------------
# The step between `unshare` and `argv`: give the stdio pipes to the unprivileged user (as runc
# does) and become it, note the time (CLOCK_MONOTONIC is system-wide) just before exec, then
# become `argv`, which is PID 1 of the new namespace.
_AS_PID1_STEP = """import os, stat, sys, time
uid, gid, stamp = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for fd in (1, 2):
    if stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.fchown(fd, uid, -1)
os.setgroups([]); os.setgid(gid); os.setuid(uid)
with open(stamp + ".tmp", "w") as handle:
    handle.write(repr(time.monotonic()))
os.rename(stamp + ".tmp", stamp)
os.execv(sys.argv[4], sys.argv[4:])
"""


_pid1_prefix: list[str] | None = None


def pid_namespace_problem() -> str | None:
    """Why `as_pid1` cannot run here (not root, no unshare, namespaces refused), or None."""
    global _pid1_prefix
    if _pid1_prefix is not None:
        return None
    unshare = shutil.which("unshare")
    if unshare is None or not running_as_root():
        return "needs root and unshare for a pid namespace"
    # In a chroot "/" is no mount point and its propagation cannot be changed (see testing.py).
    for propagation in ("private", "unchanged"):
        prefix = [unshare, "--pid", "--fork", "--mount-proc", "--propagation", propagation]
        if subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0:
            _pid1_prefix = prefix
            return None
    return "unshare cannot make a pid namespace with its own /proc here"


def as_pid1(argv: list[str], exec_stamp: Path) -> list[str]:
    """`argv` as PID 1 of a new pid namespace (its own /proc) as the unprivileged user; run it as root.

    `exec_stamp` gets time.monotonic() of the moment just before `argv` is exec'd. The process
    run by EntrypointRun is `unshare`; `pid1_host_pid` finds `argv`'s pid as seen from here.
    """
    problem = pid_namespace_problem()
    if problem is not None:
        raise RuntimeError(problem)
    assert _pid1_prefix is not None
    return [
        *_pid1_prefix,
        sys.executable,
        "-c",
        _AS_PID1_STEP,
        str(UNPRIVILEGED_UID),
        str(UNPRIVILEGED_GID),
        str(exec_stamp),
        *argv,
    ]


def children_of(pid: int) -> list[int]:
    """Live or zombie children of `pid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                data = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(data[data.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


def pid1_host_pid(unshare_pid: int, timeout: float = 30.0) -> int:
    """The pid (in our namespace) of the namespace's PID 1: the only child of `unshare --fork`."""
    if not wait_until(lambda: children_of(unshare_pid), timeout, interval=0.001):
        raise AssertionError(f"unshare (PID {unshare_pid}) started no PID 1 within {timeout} s")
    return children_of(unshare_pid)[0]
