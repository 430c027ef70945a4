"""Whether Squid serves, read from /proc alone: its processes, their states, who holds the proxy's LISTEN socket.

No connection to Squid is ever made (a TCP connect is accepted by the kernel even when no Squid
process can answer, and leaves an `error:transaction-end-before-headers` line in the access log).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from entrypoint.pid_file import PidFileError, read_pid_file
from entrypoint.proc_table import ProcessInfo, fds_readable, process_tree

# /health fails when no Squid worker has served for this long (sampled every SAMPLE_INTERVAL):
# long enough for a kid that crashed once to be respawned and listen again.
LIVENESS_GRACE = 10.0
SAMPLE_INTERVAL = 1.0
# ... or when Squid's kids exited this often within the window (a crash loop, even one whose
# kids listen for a moment each time).
CRASH_LOOP_EXITS = 3
CRASH_LOOP_WINDOW = 60.0
# The bound README promises: a Squid that stops serving fails /health within this time.
LIVENESS_BOUND = LIVENESS_GRACE + SAMPLE_INTERVAL

# Kids that hold the listening socket without ever accepting on it (SMP): the coordinator
# passes it to the workers; diskers do disk I/O only.
_NON_SERVING_KID_ROLES = ("-coord-", "-disk-")

_STATE_NAMES = {"T": "stopped", "t": "traced", "Z": "zombie", "X": "dead"}


@dataclasses.dataclass(frozen=True)
class Observation:
    """One look at Squid: its master, its kids, and why it does not serve (None: it serves)."""

    at: float
    master_pid: int | None
    master_problem: str | None  # no pid file, master gone or a zombie
    serving_problem: str | None  # no runnable worker holds the LISTEN socket
    kids: frozenset[int]
    holder: tuple[int, str, str] | None = None  # (pid, fd, "socket:[inode]") of the worker seen serving


def _kid_name(pid: int) -> str | None:
    """The name after `--kid` in a Squid kid's command line (`squid-1`, `squid-coord-3`), else None."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return None
    for index, arg in enumerate(argv[:-1]):
        if arg == b"--kid":
            return argv[index + 1].decode("ascii", errors="replace")
    return None


def listening_inodes(ports: Iterable[int]) -> set[int]:
    """Inodes of the LISTEN sockets on `ports` (IPv4 and IPv6).

    Not proc_table.tcp_sockets: that decodes every row, and a busy proxy has tens of thousands
    of them; only LISTEN rows (state 0A) are looked at here.
    """
    wanted = {f"{port:04X}" for port in ports}
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                handle.readline()  # the header
                for row in handle:
                    fields = row.split(None, 10)
                    if fields[3] == "0A" and fields[1].rsplit(":", 1)[1] in wanted:
                        inodes.add(int(fields[9]))
        except OSError:
            continue  # no IPv6 in this namespace
    return inodes


def held_socket(pid: int, inodes: set[int]) -> tuple[str, str] | None:
    """(fd, link) of the first of the socket `inodes` the process has open, else None (fds in
    order, and a listening socket is opened long before the client connections: it stops early)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return None  # gone, or not ours to read
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            return name, target
    return None


def still_holds(pid: int, fd: str, link: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}") == link
    except OSError:
        return False


def _describe(process: ProcessInfo) -> str:
    return f"pid {process.pid} {_STATE_NAMES.get(process.state, process.state)}"


def observe(
    pid_file: Path,
    comm: str,
    ports: Iterable[int],
    clock: Callable[[], float] = time.monotonic,
    hint: tuple[int, str, str] | None = None,
) -> Observation:
    """Squid's processes (the pid file's master and its tree) and whether a runnable worker listens.

    `hint` is the previous observation's (worker pid, fd, socket): while that runnable worker
    still has that socket on that fd, it is still listening (a socket leaves LISTEN only by being
    closed), and the costly looks at every TCP socket (/proc/net/tcp grows with the connections)
    and every fd are skipped.
    """
    now = clock()
    wanted = set(ports)
    port_list = ", ".join(str(port) for port in sorted(wanted))
    nobody = f"no Squid process listens on port {port_list}"
    try:
        pid = read_pid_file(pid_file)
    except PidFileError as error:  # never a hang or a huge read: a FIFO, symlink, 10 MB of digits
        return Observation(now, None, str(error), nobody, frozenset())
    if pid is None:
        return Observation(now, None, f"no pid in {pid_file}", nobody, frozenset())
    name = comm[:15]  # /proc's comm is truncated to 15 characters
    tree = process_tree(pid)
    if not tree or tree[0].comm != name or tree[0].state in ("Z", "X"):
        return Observation(now, pid, f"squid pid {pid} is not running", nobody, frozenset())
    # The master and its direct children only: a kid's own fork (before it execs a helper such
    # as unlinkd) briefly looks like a Squid kid too, and would count as a kid exit.
    squids = [p for p in tree if p.comm == name and (p.pid == pid or p.ppid == pid)]
    kid_names = {p.pid: _kid_name(p.pid) for p in squids}
    kids = frozenset(p for p, kid in kid_names.items() if kid is not None)
    candidates = [
        p for p in squids if not any(role in (kid_names[p.pid] or "") for role in _NON_SERVING_KID_ROLES)
    ]
    if hint is not None:
        for process in candidates:
            if process.pid == hint[0] and process.runnable and still_holds(*hint):
                return Observation(now, pid, None, None, kids, hint)
    listening = listening_inodes(wanted)
    for process in candidates if listening else []:  # runnable ones settle it; a stopped one does not
        held = held_socket(process.pid, listening) if process.runnable else None
        if held is not None:
            return Observation(now, pid, None, None, kids, (process.pid, *held))
    if listening and any(p.runnable and not fds_readable(p.pid) for p in candidates):
        # Cannot tell which process holds the socket: a runnable worker and a listener on the
        # port is the best evidence left (startup already refused a squatter on the port).
        return Observation(now, pid, None, None, kids)
    holders = [p for p in candidates if not p.runnable and held_socket(p.pid, listening) is not None]
    problem = (
        f"no runnable Squid process listens on port {port_list} ({', '.join(_describe(p) for p in holders)})"
        if holders else nobody
    )
    return Observation(now, pid, None, problem, kids)


class SquidWatch:
    """Squid's liveness over time: sampled by a thread and by every probe, shared by both."""

    def __init__(self, pid_file: Path, comm: str, ports: Iterable[int], clock: Callable[[], float] = time.monotonic) -> None:
        self.pid_file = pid_file
        self.comm = comm
        self.ports = tuple(ports)
        self.clock = clock
        self._lock = threading.Lock()
        self._previous: Observation | None = None
        self._not_serving_since: float | None = None
        self._kid_exits: collections.deque[float] = collections.deque()

    def sample(self) -> Observation:
        """Look now and fold the observation into the history."""
        with self._lock:  # one look at a time, folded in the order taken
            hint = self._previous.holder if self._previous is not None else None
            seen = observe(self.pid_file, self.comm, self.ports, self.clock, hint)
            previous = self._previous
            same_master = previous is not None and previous.master_pid == seen.master_pid
            if seen.master_problem is not None or not same_master:
                # A new (or no) master starts a new history: its start-up is not a crash loop.
                self._kid_exits.clear()
                self._not_serving_since = None if seen.master_problem else seen.at
            elif previous is not None:
                self._kid_exits.extend(seen.at for _ in previous.kids - seen.kids)
            if seen.master_problem is None:
                if seen.serving_problem is None:
                    self._not_serving_since = None
                elif self._not_serving_since is None:
                    self._not_serving_since = seen.at
            while self._kid_exits and self._kid_exits[0] < seen.at - CRASH_LOOP_WINDOW:
                self._kid_exits.popleft()
            self._previous = seen
        return seen

    def crash_loop(self) -> str | None:
        with self._lock:
            exits = len(self._kid_exits)
        if exits >= CRASH_LOOP_EXITS:
            return f"squid kids keep exiting ({exits} exits within {CRASH_LOOP_WINDOW:g} s)"
        return None

    def liveness_problem(self) -> str | None:
        """None while Squid is alive and has served within LIVENESS_GRACE, else the reason."""
        seen = self.sample()
        if seen.master_problem is not None:
            return seen.master_problem
        loop = self.crash_loop()
        if loop is not None:
            return loop
        with self._lock:
            since = self._not_serving_since
        if since is not None and seen.at - since >= LIVENESS_GRACE:
            return f"{seen.serving_problem} for {seen.at - since:.0f} s"
        return None

    def readiness_problems(self) -> list[str]:
        """Every reason Squid cannot take traffic right now (no grace), as `check: reason`."""
        seen = self.sample()
        problems = []
        squid = seen.master_problem or self.crash_loop()
        if squid is not None:
            problems.append(f"squid process: {squid}")
        if seen.serving_problem is not None:
            problems.append(f"proxy port: {seen.serving_problem}")
        return problems

    def run_sampler(self, stop: threading.Event) -> None:
        """Sample every SAMPLE_INTERVAL until `stop`: time without serving counts without probes."""
        while not stop.wait(SAMPLE_INTERVAL):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - /proc raced a dying process; look again next time
                continue
