"""Squid commands: config check, cache init, start in the foreground, identity, sockets, signals."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from entrypoint import proc_table
from entrypoint.config_snapshot import SnapshotNames
from entrypoint.log_relay import LineFilter, LineRelay, LineRender, identity
from entrypoint.log_text import safe_line
from entrypoint.output_sink import OutputSink
from entrypoint.pid_file import NoPidInFile, PidFileError, read_pid_file
from entrypoint.processes import ChildProcesses, ForkError, describe_exit
from entrypoint.redact import redact, redact_text
from entrypoint.squid_config import ActiveConfig, parse_listen_address, write_atomically

PARSE_TIMEOUT = 60.0
CACHE_INIT_TIMEOUT = 600.0
START_TIMEOUT = 30.0
LISTEN_TIMEOUT = 30.0
POLL_INTERVAL = 0.01
_STDERR_PATHS = frozenset({"/dev/stderr", "/dev/fd/2", "/proc/self/fd/2"})

# Lines of `squid -k parse` output worth showing: errors, warnings, and line references.
_PROBLEM_LINE = re.compile(r"FATAL|ERROR|Bungled|WARNING|line \d+", re.IGNORECASE)


class SquidError(Exception):
    """Squid refused the config or did not start; the message carries Squid's own words."""


def process_name(pid: int) -> tuple[str, str] | None:
    """(comm, state) of a live process from /proc, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    comm = data[data.index("(") + 1 : data.rindex(")")]
    state = data[data.rindex(")") + 2 :].split(" ", 1)[0]
    return comm, state


def is_live_process(pid: int, expected_comm: str) -> bool:
    info = process_name(pid)
    return info is not None and info[1] not in ("Z", "X") and info[0] == expected_comm[:15]


def cache_log_is_stderr(config: ActiveConfig) -> bool:
    values = [d.args[0] for d in config.named("cache_log") if d.args]
    return bool(values) and values[-1].removeprefix("stdio:") in _STDERR_PATHS


def listen_ports(config: ActiveConfig) -> list[int]:
    """The client ports the config opens (http_port, https_port)."""
    ports = [address.port for address in config.http_ports]
    ports += [
        parse_listen_address(d).port for d in config.named("https_port") if d.args
    ]  # validated: no ConfigError
    return list(dict.fromkeys(ports))


def problem_lines(output: str) -> list[str]:
    """Squid's error lines (or its last 20), redacted: Squid echoes config lines verbatim."""
    lines = [line for line in output.splitlines() if _PROBLEM_LINE.search(line)]
    return [redact(line) for line in lines or output.strip().splitlines()[-20:]]


# A socket closed and its fd number taken by another within one poll looks unchanged to a
# listing of fd numbers: every this many polls the fd links are read anyway (0.5 s at 50 ms).
FD_LINKS_EVERY = 10


class _Count(NamedTuple):
    ports: tuple[int, ...]
    pids: tuple[int, ...]
    fd_numbers: tuple[tuple[str, ...] | None, ...]
    inodes: frozenset[int]
    clients: frozenset[int]  # the inodes among them that were client connections when counted
    unchanged_polls: int


def _fd_numbers(pids: tuple[int, ...] | list[int]) -> tuple[tuple[str, ...] | None, ...]:
    """Each process's open fd numbers (None: gone or unreadable), in `pids` order."""
    listed: list[tuple[str, ...] | None] = []
    for pid in pids:
        try:
            listed.append(tuple(sorted(os.listdir(f"/proc/{pid}/fd"))))
        except OSError:
            listed.append(None)
    return tuple(listed)


class SquidProcess:
    """The running Squid master: our direct child and leader of its own process group."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        relays: list[LineRelay],
        children: ChildProcesses,
    ) -> None:
        self.process = process
        self.relays = relays
        self.children = children
        self._counted: _Count | None = None  # client_connections' last count

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def exited(self) -> asyncio.Future[int]:
        return self.children.exit_future(self.process)

    def tree(self) -> list[int]:
        """The master and every live process below it (kids, helpers)."""
        return [p.pid for p in proc_table.process_tree(self.pid) if p.state not in ("Z", "X")]

    def send(self, signum: int) -> None:
        """Signal the master (it forwards shutdown/reconfigure signals to its kids)."""
        if not self.exited.done():
            self.children.signal(self.process, signum)

    def listening(self, ports: list[int]) -> set[int]:
        """Which of `ports` Squid itself (master or a kid) holds a LISTEN socket on."""
        tree = self.tree()
        found = {
            sock.local_port for sock in proc_table.owned_sockets(tree, ports, proc_table.TCP_LISTEN)
        }
        if not all(proc_table.fds_readable(pid) for pid in tree):
            # Started as root, Squid's kids switch UID and their fds cannot be read (no
            # CAP_SYS_PTRACE): any listener counts; the check before the start found none.
            found |= {
                sock.local_port for sock in proc_table.sockets_on(ports, proc_table.TCP_LISTEN)
            }
        return found

    def client_connections(self, ports: list[int]) -> int:
        """ESTABLISHED client connections Squid still serves on `ports`.

        The kernel finds ESTABLISHED sockets by walking its whole connection hash (every
        namespace's sockets: O(the host's connections), 5-15 ms at 20k rows), so it is asked
        only when Squid holds a socket it did not hold at the last look (read from the
        processes' fd links, O(Squid's fds)): a new one may be a client. When sockets were only
        closed, the clients are those of the last count still held, no kernel walk; a drain
        (no new clients once Squid stops accepting) walks once. Between link reads, a poll
        lists the same processes' fd numbers only: while they are unchanged, at most
        FD_LINKS_EVERY polls in a row, nothing was opened or closed.
        """
        key = tuple(ports)
        counted = self._counted
        if (
            counted is not None
            and counted.ports == key
            and counted.unchanged_polls < FD_LINKS_EVERY
        ):
            if _fd_numbers(counted.pids) == counted.fd_numbers:
                self._counted = counted._replace(unchanged_polls=counted.unchanged_polls + 1)
                return len(counted.clients)
        pids = self.tree()
        fd_numbers = _fd_numbers(pids)
        inodes = frozenset(proc_table.socket_inodes(pids))
        if counted is not None and counted.ports == key and inodes <= counted.inodes:
            clients = counted.clients & inodes  # only closed since: no new client, no walk
        else:
            established = proc_table.sockets_on(ports, proc_table.TCP_ESTABLISHED) if inodes else []
            clients = frozenset(sock.inode for sock in established if sock.inode in inodes)
        self._counted = _Count(key, tuple(pids), fd_numbers, inodes, clients, 0)
        return len(clients)

    def wake_workers(self) -> None:
        """SIGCHLD to Squid's own processes below the master (its kids), to wake their event loops.

        Squid's handler only reaps exited helpers, so the signal changes nothing else.
        """
        tree = [p for p in proc_table.process_tree(self.pid) if p.state not in ("Z", "X")]
        for info in tree[1:]:
            if tree[0].comm == info.comm:
                try:
                    os.kill(info.pid, signal.SIGCHLD)
                except (ProcessLookupError, PermissionError):
                    pass

    def kill_all(self) -> None:
        """SIGKILL the master, its group and every process below it."""
        self.children.kill_group(self.process, signal.SIGKILL)
        for pid in self.tree():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    async def drain_output(self, timeout: float) -> None:
        for relay in self.relays:
            relay.stop_resting()
        pending = [relay.closed for relay in self.relays]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for relay in self.relays:
            relay.close()


def foreign_listeners(ports: list[int], squid_pid: int | None) -> list[proc_table.TcpSocket]:
    """LISTEN sockets on `ports` that no process of Squid's tree holds: a squatter on the port.

    The socket table is read before the tree and its fds, so a socket Squid opens meanwhile
    is either missing from the table or found among Squid's fds, never taken for a squatter.
    """
    listening = proc_table.sockets_on(ports, proc_table.TCP_LISTEN)
    if not listening:
        return []
    tree = [] if squid_pid is None else [p.pid for p in proc_table.process_tree(squid_pid)]
    if not all(proc_table.fds_readable(pid) for pid in tree):
        return []  # cannot tell; `listening` accepts any listener then
    own = proc_table.socket_inodes(tree)
    return [sock for sock in listening if sock.inode not in own]


UNPRIVILEGED_PORT_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
CAP_NET_BIND_SERVICE = 10


def may_bind_privileged_ports() -> bool:
    """Root, or CAP_NET_BIND_SERVICE in our effective set (/proc/self/status CapEff)."""
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_BIND_SERVICE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def privileged_port_problem(ports: list[int]) -> str | None:
    """Why Squid could not bind one of `ports` (below ip_unprivileged_port_start, no right to), or None."""
    try:
        start = int(UNPRIVILEGED_PORT_START.read_text())
    except (OSError, ValueError):
        start = 1024
    low = sorted(port for port in ports if port < start)
    if not low or may_bind_privileged_ports():
        return None
    return (
        f"port {', '.join(map(str, low))} is privileged (below ip_unprivileged_port_start {start})"
        f" and UID {os.geteuid()} may not bind it: choose a port of {start} or above, or run with"
        " CAP_NET_BIND_SERVICE"
    )


class SquidCommands:
    def __init__(self, squid_bin: Path, children: ChildProcesses, log: logging.Logger) -> None:
        self.squid_bin = squid_bin
        self.children = children
        self.log = log
        # Started as root, Squid's effective user reopens /dev/stdout and /dev/stderr: it must own the pipes.
        self.stdio_owner: int | None = None
        # Squid reads config snapshots: its messages name the operator's files instead.
        self.names = SnapshotNames()
        # How Squid's stdout (access log) and stderr (cache.log) lines are written (LOG_FORMAT).
        self.renders: tuple[LineRender, LineRender] = (safe_line, safe_line)
        self.last_check_seconds = 0.0  # the last `squid -k parse` (/metrics)

    @property
    def comm(self) -> str:
        return self.squid_bin.name

    def _check_binary(self) -> None:
        if not os.access(self.squid_bin, os.X_OK):
            raise SquidError(
                f"Squid binary {self.squid_bin} is missing or not executable"
                " (set CEPHALOPROXY_SQUID_BIN)"
            )

    async def check_config(self, config: ActiveConfig, path: Path | None = None) -> None:
        """`squid -k parse` of `path` (a snapshot of `config` not active yet), else of config.path."""
        self._check_binary()
        argv = [str(self.squid_bin), "-k", "parse", "-f", str(path or config.path)]
        started = time.monotonic()
        try:
            returncode, output = await self.children.run(argv, timeout=PARSE_TIMEOUT)
        except ForkError as error:
            raise SquidError(str(error)) from None
        finally:
            self.last_check_seconds = time.monotonic() - started  # for /metrics
        self._judge_check(config, returncode, output)

    async def finish_check(
        self, config: ActiveConfig, parse: subprocess.Popen[bytes], output_fd: int, started: float
    ) -> None:
        """`check_config`'s outcome for the `squid -k parse` head_start began (`adopt`ed)."""
        try:
            returncode, output = await self.children.collect_adopted(
                parse, output_fd, PARSE_TIMEOUT
            )
        finally:
            self.last_check_seconds = time.monotonic() - started  # for /metrics
        self._judge_check(config, returncode, output)

    def _judge_check(self, config: ActiveConfig, returncode: int, output: str) -> None:
        output = self.names.restore(output)
        self.log.debug("squid -k parse output:\n%s", redact_text(output.rstrip()))
        if returncode != 0:
            details = "\n".join(problem_lines(output))
            raise SquidError(
                f"Squid rejected the config {config.source} ({describe_exit(returncode)}):\n{details}"
            )

    async def initialise_cache(self, config: ActiveConfig, path: Path | None = None) -> bool:
        """`squid -z` (of the snapshot `path` of `config` if given) unless every disk cache_dir has the marker of a completed -z; returns whether it ran.

        -z only adds what is missing, so it completes a cache an interrupted or failed -z left
        partial, and leaves a complete cache without the marker (an older image's) as it is.
        """
        missing = [d for d in config.disk_cache_dirs if not d.is_initialised()]
        if not missing:
            return False
        for cache_dir in missing:
            if cache_dir.remove_partial_rock_db():
                self.log.warning(
                    "Removed the partial rock db in %s left by an interrupted squid -z",
                    cache_dir.path,
                )
        self.log.info("Initialising Squid cache: %s", ", ".join(str(d.path) for d in missing))
        # -N: without it `squid -z` backgrounds itself and returns before the dirs exist.
        argv = [str(self.squid_bin), "-N", "-z", "-f", str(path or config.path)]
        try:
            returncode, output = await self.children.run(argv, timeout=CACHE_INIT_TIMEOUT)
        except ForkError as error:
            raise SquidError(str(error)) from None
        self.log.debug("squid -z output:\n%s", redact_text(output.rstrip()))
        if returncode != 0 or any(not d.made_by_squid() for d in missing):
            details = "\n".join(problem_lines(output))
            raise SquidError(
                f"Squid cache initialisation failed ({describe_exit(returncode)}):\n{details}\n"
                "The next start completes it (free space or fix the cache_dir, then restart)"
            )
        for cache_dir in missing:
            try:
                write_atomically(cache_dir.marker, b"squid -z completed\n", 0o644)
            except OSError as error:
                self.log.warning(
                    "Cannot mark %s as initialised (%s): squid -z runs again at the next start",
                    cache_dir.path,
                    error.strerror,
                )
        return True

    async def start(
        self,
        config: ActiveConfig,
        sinks: tuple[OutputSink, OutputSink],
        line_filter: LineFilter = identity,
    ) -> SquidProcess:
        """Start Squid in the foreground as our direct child, in its own process group.

        Its stdout/stderr are pipes we own, relayed line by line to our sinks (see log_relay).
        """
        self._check_binary()
        names = self.names

        def relayed(line: str) -> str:  # the operator's paths, not the snapshot's, then redacted
            return line_filter(names.restore(line))

        out_fd, out_relay = await self.children.open_pipe(
            lambda: LineRelay(sinks[0], relayed, render=self.renders[0])
        )
        # `-d 0` keeps Squid's stderr open (without it Squid points fds 0-2 at /dev/null) and
        # copies each important message there; when cache.log is stderr too, each such
        # message arrives twice in a row: the relay collapses those pairs.
        collapse = cache_log_is_stderr(config)
        err_fd, err_relay = await self.children.open_pipe(
            lambda: LineRelay(sinks[1], relayed, collapse_pairs=collapse, render=self.renders[1])
        )
        try:
            if self.stdio_owner is not None:
                os.fchown(out_fd, self.stdio_owner, -1)
                os.fchown(err_fd, self.stdio_owner, -1)
            process = self.children.spawn(
                [str(self.squid_bin), "--foreground", "-d", "0", "-f", str(config.path)],
                what="Squid",
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
                process_group=0,
            )
        except ForkError as error:
            out_relay.close()
            err_relay.close()
            raise SquidError(str(error)) from None
        finally:
            os.close(out_fd)
            os.close(err_fd)
        return SquidProcess(process, [out_relay, err_relay], self.children)

    @staticmethod
    def _exited_error(squid: SquidProcess) -> SquidError:
        return SquidError(
            f"Squid exited during startup ({describe_exit(squid.exited.result())});"
            " see its messages above"
        )

    async def wait_until_running(self, squid: SquidProcess, pid_file: Path) -> int:
        """Wait for the pid file naming the Squid we started (not a stale pid); returns it."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if squid.exited.done():
                raise self._exited_error(squid)
            try:
                pid = read_pid_file(pid_file)
            except NoPidInFile:
                pid = None  # being written
            except PidFileError as error:
                raise SquidError(str(error)) from None
            # A left-over pid file may name any live process, even another squid: only our
            # child (or a process below it) counts.
            if pid is not None and is_live_process(pid, self.comm) and pid in squid.tree():
                return pid
            await asyncio.sleep(POLL_INTERVAL)
        raise SquidError(
            f"Squid did not write a pid file {pid_file} naming the Squid started here (PID"
            f" {squid.pid}) within {START_TIMEOUT:g} s"
        )

    async def wait_until_listening(self, squid: SquidProcess, ports: list[int]) -> None:
        """Wait until Squid itself holds a LISTEN socket on every port (proc_table, not a connect)."""
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while True:
            if squid.exited.done():
                raise self._exited_error(squid)
            # Until anything listens on the ports, the socket table alone says so: the process
            # tree and its fds are read only then (a cheaper poll leaves the CPU to Squid).
            anything = bool(proc_table.sockets_on(ports, proc_table.TCP_LISTEN))
            held = squid.listening(ports) if anything else set()  # one read of the tree per poll
            missing = [port for port in ports if port not in held]
            if not missing:
                return
            squatters = foreign_listeners(missing, squid.pid) if anything else []
            if squatters:
                # Seen twice in a row: a socket that changes hands mid-read is not a squatter.
                await asyncio.sleep(POLL_INTERVAL)
                squatters = foreign_listeners(missing, squid.pid)
            if squatters or time.monotonic() > deadline:
                taken = sorted({sock.local_port for sock in squatters})
                what = (
                    f"another process already listens on port {', '.join(map(str, taken))}"
                    if taken
                    else f"Squid does not listen on port {', '.join(map(str, missing))}"
                    f" after {LISTEN_TIMEOUT:g} s"
                )
                raise SquidError(
                    f"{what}: free the port or change SQUID_PORT / the config's http_port"
                    " (see Squid's messages above)"
                )
            await asyncio.sleep(POLL_INTERVAL)
