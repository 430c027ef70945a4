"""A private Docker engine for the acceptance suite: dockerd in its own network namespace, started and stopped cleanly.

Why a private engine: CI machines have no Docker service, and the suite must not touch
the host's networking. Debian's docker.io (20.10) runs here as

    nsenter --net=<netns> dockerd --storage-driver=vfs --exec-opt native.cgroupdriver=cgroupfs
        --iptables=false --userland-proxy=true --data-root … --exec-root … --pidfile … -H unix://…

in a network namespace of its own (loopback up), so its bridge, docker-proxy listeners
and sysctls never reach the host's. `ip netns exec` cannot be used: it remounts /sys and
dockerd then fails with "Devices cgroup isn't mounted"; `nsenter --net` changes only the
network namespace.

Published ports: docker-proxy (--userland-proxy, no iptables) listens on 127.0.0.1 *inside
that namespace*, so whatever connects to published ports must run there too. `run -- CMD`
runs CMD (e.g. pytest) in the daemon's namespace with DOCKER_HOST set; the suite's test
servers then bind the docker0 gateway address (also in that namespace), which is where
containers reach them. The unix socket itself is reachable from any namespace, so
`docker` commands work from the host as well.

Stopping: SIGTERM to dockerd (it stops its containers and its containerd), then every
process still tied to this engine is killed: those whose command line names the
engine's private runtime dir (containerd, containerd-shim-runc-v2), those in its network
namespace (docker-proxy, CMD's leftovers) and all their descendants (container
processes). Mounts left under the engine's dirs are unmounted, the namespace is
released and the private dir removed.

CLI (root):
    python3 -m tests.support.docker_daemon run [--data-root DIR] -- python3 -m pytest -rs tests/acceptance
    python3 -m tests.support.docker_daemon start [--data-root DIR]   # prints DOCKER_HOST and how to stop
    python3 -m tests.support.docker_daemon stop --runtime-dir DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from entrypoint import proc_table
from tests.support import timeouts
from tests.support.runtime import RUNTIME_ENV, SYSTEM_DIRS

DOCKERD_FLAGS: tuple[str, ...] = (
    "--storage-driver=vfs",  # works on any filesystem, no overlay/fuse needed
    "--exec-opt",
    "native.cgroupdriver=cgroupfs",  # no systemd here
    "--iptables=false",  # never touch the host's (or any) firewall rules
    "--userland-proxy=true",  # published ports via docker-proxy, which needs no iptables
)
START_TIMEOUT_S = 60.0  # scaled by $CEPHALOPROXY_TEST_TIMEOUT_SCALE
STOP_TIMEOUT_S = 60.0  # dockerd gives each container 15 s, in parallel
PROBE_TIMEOUT_S = 10.0
STATE_FILE = "state.json"

# Every program the engine needs, with the Debian package that ships it.
REQUIRED_TOOLS: tuple[tuple[str, str], ...] = (
    ("dockerd", "docker.io"),
    ("docker", "docker.io"),
    ("docker-proxy", "docker.io"),
    ("containerd", "containerd"),
    ("containerd-shim-runc-v2", "containerd"),
    ("runc", "runc"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
    ("umount", "mount"),
    ("ip", "iproute2"),
)


class DockerDaemonError(RuntimeError):
    """The private engine could not be started or stopped; the message says what to do."""


def search_path(
    environ: Mapping[str, str] | None = None, extra_dirs: Sequence[str] = SYSTEM_DIRS
) -> str:
    """$PATH followed by the system dirs (dockerd and runc live in /usr/sbin)."""
    env = os.environ if environ is None else environ
    return os.pathsep.join([env.get("PATH", os.defpath), *extra_dirs])


def dockerd_installed(
    environ: Mapping[str, str] | None = None, extra_dirs: Sequence[str] = SYSTEM_DIRS
) -> str | None:
    """The dockerd path, or None when Docker's engine is not installed."""
    return shutil.which("dockerd", path=search_path(environ, extra_dirs))


def find_tools(
    environ: Mapping[str, str] | None = None, extra_dirs: Sequence[str] = SYSTEM_DIRS
) -> dict[str, str]:
    """Absolute paths of every REQUIRED_TOOLS program; raises naming each missing one and its package."""
    path = search_path(environ, extra_dirs)
    found: dict[str, str] = {}
    missing: list[str] = []
    for tool, package in REQUIRED_TOOLS:
        where = shutil.which(tool, path=path)
        if where is None:
            missing.append(f"{tool} (Debian package {package})")
        else:
            found[tool] = where
    if missing:
        packages = sorted({package for tool, package in REQUIRED_TOOLS if tool not in found})
        raise DockerDaemonError(
            "cannot start a private Docker engine: not found on PATH or in "
            f"{', '.join(extra_dirs) or '(no system dirs)'}: {', '.join(missing)}; "
            f"install them with `apt-get install -y {' '.join(packages)}`"
        )
    return found


# /proc ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EngineProcess:
    """A process with what ties it to an engine: its command line and network namespace."""

    pid: int
    ppid: int
    state: str  # "R", "S", "Z", ... (entrypoint/proc_table.py)
    cmdline: str
    netns: tuple[int, int] | None  # (st_dev, st_ino) of /proc/<pid>/ns/net

    def describe(self) -> str:
        return f"pid {self.pid} ({self.state}): {self.cmdline[:200] or '[no cmdline]'}"


def _cmdline(pid: int) -> str | None:
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None  # gone meanwhile
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _with_details(info: proc_table.ProcessInfo) -> EngineProcess | None:
    cmdline = _cmdline(info.pid)
    if cmdline is None:
        return None
    try:
        ns = os.stat(Path("/proc") / str(info.pid) / "ns" / "net")
        netns: tuple[int, int] | None = (ns.st_dev, ns.st_ino)
    except OSError:
        netns = None
    return EngineProcess(info.pid, info.ppid, info.state, cmdline, netns)


def process_table() -> dict[int, EngineProcess]:
    found = (_with_details(info) for info in proc_table.all_processes())
    return {process.pid: process for process in found if process is not None}


def _is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie only waits to be reaped)."""
    info = proc_table.read_process(pid)
    return info is not None and info.state not in ("Z", "X")


def _own_lineage() -> set[int]:
    """This process and its ancestors: never ours to kill."""
    lineage: set[int] = set()
    pid = os.getpid()
    while pid > 1 and pid not in lineage:
        lineage.add(pid)
        info = proc_table.read_process(pid)
        if info is None:
            break
        pid = info.ppid
    return lineage


def mount_points(table: str | None = None) -> list[str]:
    """Mount points of this mount namespace, from /proc/self/mountinfo (octal escapes decoded)."""
    text = Path("/proc/self/mountinfo").read_text() if table is None else table
    points = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.append(
                re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), fields[4])
            )
    return points


def _under(path: str, roots: Sequence[Path]) -> bool:
    return any(path == str(root) or path.startswith(str(root).rstrip("/") + "/") for root in roots)


# The engine ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StopReport:
    """What stop() had to do beyond dockerd's own shutdown (empty lists: dockerd cleaned up everything)."""

    daemon_exited: (
        bool  # dockerd ended on SIGTERM (False: it had to be killed, or was already gone)
    )
    killed: tuple[str, ...]
    unmounted: tuple[str, ...]
    still_running: tuple[str, ...]
    still_mounted: tuple[str, ...]

    @property
    def clean(self) -> bool:
        return not self.still_running and not self.still_mounted


class DockerDaemon:
    """One private dockerd: start(), docker_host / environ(), run_in_netns(), stop().

    Everything transient (network namespace file, exec root, socket, pid file, log) lives
    in a fresh runtime dir under /tmp (short: unix socket paths are limited to 108
    bytes). The data root (images) is `data_root` if given, kept after stop() so loaded
    images survive between runs, else a dir inside the runtime dir, removed with it.
    """

    def __init__(
        self,
        data_root: Path | None = None,
        *,
        start_timeout: float | None = None,
        environ: Mapping[str, str] | None = None,
        extra_dirs: Sequence[str] = SYSTEM_DIRS,
    ) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._extra_dirs = tuple(extra_dirs)
        self._given_data_root = data_root.resolve() if data_root is not None else None
        self._start_timeout = (
            timeouts.scaled(START_TIMEOUT_S, self._environ)
            if start_timeout is None
            else start_timeout
        )
        self._tools: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.runtime_dir: Path | None = None
        self._netns_id: tuple[int, int] | None = None

    # Paths ---------------------------------------------------------------------------
    def _dir(self) -> Path:
        if self.runtime_dir is None:
            raise DockerDaemonError("the Docker engine has not been started")
        return self.runtime_dir

    @property
    def netns(self) -> Path:
        return self._dir() / "netns"

    @property
    def data_root(self) -> Path:
        return self._given_data_root or self._dir() / "data"

    @property
    def socket(self) -> Path:
        return self._dir() / "docker.sock"

    @property
    def log_file(self) -> Path:
        return self._dir() / "dockerd.log"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def command_line(self) -> list[str]:
        """The exact argv that starts dockerd (nsenter into the namespace, then dockerd)."""
        return [
            self.tool("nsenter"),
            f"--net={self.netns}",
            self.tool("dockerd"),
            *DOCKERD_FLAGS,
            f"--data-root={self.data_root}",
            f"--exec-root={self._dir() / 'exec'}",
            f"--pidfile={self._dir() / 'docker.pid'}",
            f"--host={self.docker_host}",
        ]

    def environ(self) -> dict[str, str]:
        """The environment for the suite: DOCKER_HOST, and docker as the runtime unless one is forced."""
        env = dict(self._environ)
        env["DOCKER_HOST"] = self.docker_host
        env.setdefault(RUNTIME_ENV, "docker")
        env["PATH"] = search_path(self._environ, self._extra_dirs)
        return env

    def docker_argv(self, *args: str) -> list[str]:
        return [self.tool("docker"), f"--host={self.docker_host}", *args]

    # Start ---------------------------------------------------------------------------
    def start(self) -> "DockerDaemon":
        if os.geteuid() != 0:
            raise DockerDaemonError(
                "a private Docker engine needs root (network namespaces, mounts); run as root"
            )
        self._tools = find_tools(self._environ, self._extra_dirs)
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="cp-dockerd-"))
        try:
            self._make_netns()
            self.data_root.mkdir(parents=True, exist_ok=True)
            log = self.log_file.open("wb")
            try:
                self._process = subprocess.Popen(
                    self.command_line(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.environ(),
                    start_new_session=True,  # a Ctrl-C meant for the suite must not hit dockerd
                )
            finally:
                log.close()
            self.pid = self._process.pid  # nsenter without --fork execs dockerd: same pid
            self._write_state()
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _make_netns(self) -> None:
        self.netns.touch()
        # unshare bind-mounts the new namespace onto the file, so it outlives `true`.
        self._run_tool(
            [self._tools["unshare"], f"--net={self.netns}", "true"], "create a network namespace"
        )
        ns = os.stat(self.netns)
        self._netns_id = (ns.st_dev, ns.st_ino)
        self._run_tool(
            [
                self._tools["nsenter"],
                f"--net={self.netns}",
                self._tools["ip"],
                "link",
                "set",
                "lo",
                "up",
            ],
            "bring loopback up in the namespace",
        )

    def _run_tool(self, argv: list[str], purpose: str) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise DockerDaemonError(
                f"cannot {purpose}: `{' '.join(argv)}` exited {done.returncode}: {(done.stderr or done.stdout).strip()}"
            )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        last = "no answer yet"
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise DockerDaemonError(
                    f"dockerd exited with code {self._process.returncode} before answering; "
                    f"its log ({self.log_file}) ends with:\n{self.log_tail()}"
                )
            try:
                done = subprocess.run(
                    self.docker_argv("info", "--format", "{{.ServerVersion}}"),
                    capture_output=True,
                    text=True,
                    timeout=PROBE_TIMEOUT_S,
                    check=False,
                    env=self.environ(),
                )
                if done.returncode == 0 and done.stdout.strip():
                    return
                output = (done.stderr or done.stdout).strip().splitlines()
                last = output[-1] if output else f"`docker info` exited {done.returncode}"
            except subprocess.TimeoutExpired:
                last = f"`docker info` did not answer within {PROBE_TIMEOUT_S:.0f} s"
            if time.monotonic() >= deadline:
                raise DockerDaemonError(
                    f"dockerd did not answer `docker info` within {self._start_timeout:.0f} s "
                    f"(raise {timeouts.SCALE_ENV} on slow machines); last: {last}; "
                    f"its log ({self.log_file}) ends with:\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"

    def _write_state(self) -> None:
        state = {
            "pid": self.pid,
            "data_root": str(self.data_root),
            "owns_data_root": self._given_data_root is None,
        }
        (self._dir() / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")

    @classmethod
    def attach(cls, runtime_dir: Path, environ: Mapping[str, str] | None = None) -> "DockerDaemon":
        """The engine a `start` CLI call left running in `runtime_dir` (to stop it)."""
        state_path = runtime_dir / STATE_FILE
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DockerDaemonError(
                f"{state_path}: not a runtime dir written by `start` ({error})"
            ) from None
        daemon = cls(None if state["owns_data_root"] else Path(state["data_root"]), environ=environ)
        daemon.runtime_dir = runtime_dir.resolve()
        daemon._tools = find_tools(daemon._environ, daemon._extra_dirs)
        daemon.pid = int(state["pid"])
        try:
            ns = os.stat(daemon.netns)
            daemon._netns_id = (ns.st_dev, ns.st_ino)
        except OSError:
            daemon._netns_id = None
        return daemon

    # Use -----------------------------------------------------------------------------
    def run_in_netns(
        self, argv: Sequence[str], timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the engine's network namespace (where published ports are) with environ()."""
        return subprocess.run(
            [self.tool("nsenter"), f"--net={self.netns}", *argv],
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def related_processes(self) -> list[EngineProcess]:
        """Processes tied to this engine: naming its runtime dir, in its namespace, and their descendants."""
        if self.runtime_dir is None:
            return []
        table = process_table()
        marker = str(self.runtime_dir)
        roots = {
            info.pid
            for info in table.values()
            if marker in info.cmdline
            or (self._netns_id is not None and info.netns == self._netns_id)
        }
        if self.pid is not None and self.pid in table and marker in table[self.pid].cmdline:
            roots.add(self.pid)
        children: dict[int, list[int]] = {}
        for info in table.values():
            children.setdefault(info.ppid, []).append(info.pid)
        found, queue = set(), list(roots)
        while queue:
            pid = queue.pop()
            if pid not in found:
                found.add(pid)
                queue += children.get(pid, [])
        mine = _own_lineage()
        return [table[pid] for pid in sorted(found - mine) if table[pid].state != "Z"]

    def leftover_mounts(self) -> list[str]:
        if self.runtime_dir is None:
            return []
        return [
            point for point in mount_points() if _under(point, [self.runtime_dir, self.data_root])
        ]

    # Stop ----------------------------------------------------------------------------
    def stop(self, timeout: float = STOP_TIMEOUT_S) -> StopReport:
        """Stop dockerd and everything it started; idempotent. Raises only if something cannot be removed."""
        if self.runtime_dir is None or not self.runtime_dir.exists():
            return StopReport(False, (), (), (), ())
        exited = self._terminate_daemon(timeout)
        killed = self._kill_leftovers()
        unmounted = self._unmount_leftovers()
        # Our own namespace file last: with no process left in it, the namespace is gone.
        if str(self.netns) in mount_points():
            self._run_tool(
                [self._tools["umount"], str(self.netns)], "release the network namespace"
            )
        still_running = tuple(info.describe() for info in self.related_processes())
        still_mounted = tuple(self.leftover_mounts())
        report = StopReport(exited, killed, unmounted, still_running, still_mounted)
        if not report.clean:
            raise DockerDaemonError(
                f"the private Docker engine in {self.runtime_dir} could not be cleaned up: "
                f"still running {list(still_running)}, still mounted {list(still_mounted)}"
            )
        # A given data root is outside the runtime dir and stays (its images are reused).
        shutil.rmtree(self._dir())
        self.runtime_dir = None
        return report

    def tool(self, name: str) -> str:
        """The absolute path of one REQUIRED_TOOLS program (e.g. "nsenter")."""
        tools = self._tools or find_tools(self._environ, self._extra_dirs)
        return tools[name]

    def wait_for_daemon(self, timeout: float) -> bool:
        """Wait up to `timeout` s for dockerd to end (without signalling it); True once it has."""
        deadline = time.monotonic() + timeout
        while self._daemon_running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def _daemon_running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        # Attached from the CLI: make sure the pid is still our dockerd, not a reused one.
        if self.pid is None or not _is_running(self.pid):
            return False
        return str(self.runtime_dir) in (_cmdline(self.pid) or "")

    def _terminate_daemon(self, timeout: float) -> bool:
        if self.pid is None or not self._daemon_running():
            return False
        os.kill(self.pid, signal.SIGTERM)
        if self.wait_for_daemon(timeout):
            return True
        os.kill(self.pid, signal.SIGKILL)
        if self._process is not None:
            self._process.wait(timeout=30)
        return False

    def _kill_leftovers(self) -> tuple[str, ...]:
        """SIGKILL whatever dockerd left behind (orphaned containerd, shims, container processes)."""
        killed: list[str] = []
        for _ in range(5):  # a dying shim may briefly leave a child; re-scan a few times
            leftovers = self.related_processes()
            if not leftovers:
                break
            for info in leftovers:
                try:
                    os.kill(info.pid, signal.SIGKILL)
                    killed.append(info.describe())
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while any(_is_running(info.pid) for info in leftovers) and time.monotonic() < deadline:
                time.sleep(0.1)
        return tuple(killed)

    def _unmount_leftovers(self) -> tuple[str, ...]:
        """Unmount what dockerd left mounted (its data-root bind, container netns and shm mounts)."""
        unmounted: list[str] = []
        for _ in range(3):  # stacked mounts (a bind over a bind) need several passes
            points = sorted(
                set(self.leftover_mounts()) - {str(self.netns)}, key=len, reverse=True
            )  # deepest first
            if not points:
                break
            for point in points:
                done = subprocess.run(
                    [self._tools["umount"], point],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                if done.returncode != 0:
                    # Busy (a process we could not see holds it): detach it so the dir can go.
                    subprocess.run(
                        [self._tools["umount"], "--lazy", point],
                        capture_output=True,
                        timeout=30,
                        check=False,
                    )
                unmounted.append(point)
        return tuple(unmounted)


# CLI -----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m tests.support.docker_daemon", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("start", "start an engine and leave it running; prints DOCKER_HOST and the stop command"),
        ("run", "start an engine, run CMD in its network namespace with DOCKER_HOST set, stop it"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument(
            "--data-root", type=Path, help="keep images here between runs (default: a temp dir)"
        )
        sub.add_argument(
            "--timeout", type=float, help="seconds to wait for `docker info` (default 60, scaled)"
        )
        if name == "run":
            sub.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    stop = commands.add_parser("stop", help="stop the engine `start` left in --runtime-dir")
    stop.add_argument("--runtime-dir", type=Path, required=True)
    return parser


def _print_report(report: StopReport) -> None:
    for line in report.killed:
        print(f"docker_daemon: killed leftover {line}", file=sys.stderr)
    for point in report.unmounted:
        print(f"docker_daemon: unmounted leftover {point}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "stop":
            _print_report(DockerDaemon.attach(args.runtime_dir).stop())
            return 0
        daemon = DockerDaemon(args.data_root, start_timeout=args.timeout)
        if args.command == "start":
            daemon.start()
            print(f"export DOCKER_HOST={daemon.docker_host}")
            print(
                f"# published ports listen in the engine's network namespace: nsenter --net={daemon.netns} CMD"
            )
            print(
                f"# stop: python3 -m tests.support.docker_daemon stop --runtime-dir {daemon.runtime_dir}"
            )
            return 0
        cmd = list(args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd)
        if not cmd:
            print(
                "docker_daemon run: give the command after --, e.g. run -- python3 -m pytest tests/acceptance",
                file=sys.stderr,
            )
            return 2
        daemon.start()
        print(f"docker_daemon: dockerd {' '.join(daemon.command_line())}", file=sys.stderr)
        try:
            # Not run_in_netns(): the command's output goes straight to the terminal.
            code = subprocess.run(
                [daemon.tool("nsenter"), f"--net={daemon.netns}", *cmd],
                env=daemon.environ(),
                check=False,
            ).returncode
        finally:
            report = daemon.stop()
            _print_report(report)
        return code
    except (DockerDaemonError, timeouts.TimeoutScaleError) as error:
        print(f"docker_daemon: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
