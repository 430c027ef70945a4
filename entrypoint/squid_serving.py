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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from entrypoint import sock_diag
from entrypoint.pid_file import CachedPidFile, PidFileError
from entrypoint.proc_table import TCP_LISTEN, HeldProcesses, Look, ProcessInfo, fds_readable

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
# A worker that makes no progress (in uninterruptible sleep without a context switch, or with
# connections waiting unaccepted) fails /ready once that lasted this long, /health after the grace.
STALL_READY = 2.0

# The LISTEN sockets on the proxy port are found by a dump at least this often (and whenever one
# of them is gone, or no worker holds one); in between a look asks for each of them directly.
LISTENERS_REFRESH = SAMPLE_INTERVAL

# Kids that hold the listening socket without ever accepting on it (SMP): the coordinator
# passes it to the workers; diskers do disk I/O only.
_NON_SERVING_KID_ROLES = ("-coord-", "-disk-")

_STATE_NAMES = {"T": "stopped", "t": "traced", "Z": "zombie", "X": "dead"}
_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")

Holder = tuple[int, str, str]  # (pid, fd, "socket:[inode]")


@dataclasses.dataclass(frozen=True)
class Observation:
    """One look at Squid: its master, its kids, and why it does not serve (None: it serves)."""

    at: float
    master_pid: int | None
    master_problem: str | None  # no pid file, master gone or a zombie
    serving_problem: str | None  # no runnable worker holds the LISTEN socket
    kids: frozenset[int]
    holder: Holder | None = None  # of the worker seen serving (not in uninterruptible sleep)
    asleep: tuple[tuple[int, int], ...] = ()  # (pid, context switches): the holders, all in state D
    backlog: int = 0  # connections waiting in the proxy port's accept queue(s)
    activity: int | None = (
        None  # the candidates' I/O syscalls so far, while a backlog waits (None: unknown)
    )


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


def _listen_rows(table: str, wanted: set[str]) -> dict[int, int]:
    """{inode: accept queue} of one table's LISTEN rows on the `wanted` (hex) ports. The kernel
    lists LISTEN sockets before all others: once found, the first other row ends the read."""
    rows: dict[int, int] = {}
    try:
        with open(table, encoding="ascii") as handle:
            handle.readline()  # the header
            for row in handle:
                fields = row.split(None, 10)
                if fields[3] != "0A":
                    if rows:
                        break
                    continue
                if fields[1].rsplit(":", 1)[1] in wanted:
                    # `tx_queue:rx_queue`; for a LISTEN socket rx_queue is its accept backlog.
                    rows[int(fields[9])] = int(fields[4].split(":")[1], 16)
    except OSError:
        pass  # no IPv6 in this namespace
    return rows


def _listeners(ports: Iterable[int]) -> list[sock_diag.DiagSocket] | None:
    """The LISTEN sockets on `ports` (netlink; None where it is refused)."""
    return sock_diag.tcp_sockets(TCP_LISTEN, set(ports))


def listen_backlogs(ports: Iterable[int]) -> dict[int, int]:
    """{inode: connections waiting to be accepted} of the LISTEN sockets on `ports` (IPv4 and IPv6).

    Asked of the kernel over netlink, filtered by state and port there (sock_diag): O(our
    listeners), whatever the host's connection count. Where netlink is refused, only the
    LISTEN rows of /proc/net/tcp (which come first) are read.
    """
    wanted_ports = set(ports)
    found = _listeners(wanted_ports)
    if found is not None:
        return {sock.inode: sock.queue for sock in found}
    return _proc_backlogs(wanted_ports)


def _proc_backlogs(ports: set[int]) -> dict[int, int]:
    wanted = {f"{port:04X}" for port in ports}
    rows: dict[int, int] = {}
    for table in _TCP_TABLES:
        rows.update(_listen_rows(table, wanted))
    return rows


def held_socket(pid: int, inodes: Iterable[int]) -> tuple[str, str] | None:
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


def context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of the process's main thread so far (-1: gone).
    A process in uninterruptible sleep whose count stays the same has not woken up in between."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return -1
    total = 0
    for line in lines:
        name, _, value = line.partition(b":")
        if name in (b"voluntary_ctxt_switches", b"nonvoluntary_ctxt_switches"):
            total += int(value)
    return total


def io_syscalls(pids: Iterable[int]) -> int | None:
    """The processes' read and write syscalls so far (/proc/<pid>/io syscr + syscw); None when
    any cannot be read (not ours to read: then nothing may count as 'no progress')."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io", "rb") as handle:
                lines = handle.read().splitlines()
        except OSError:
            return None
        for line in lines:
            name, _, value = line.partition(b":")
            if name in (b"syscr", b"syscw"):
                total += int(value)
    return total


def _describe(process: ProcessInfo) -> str:
    return f"pid {process.pid} {_STATE_NAMES.get(process.state, process.state)}"


class Readers:
    """What observe keeps from one look to the next so that it re-reads nothing unchanged: the pid
    file's answer while an lstat shows the same file, /proc stat and children files held open
    (one pread each), and each process's kid name while its image (pid, start time, argument
    area: a new exec moves it) stays the same."""

    def __init__(self, pid_file: Path) -> None:
        self.pid_file = CachedPidFile(pid_file)
        self.processes = HeldProcesses()
        self._names: dict[int, tuple[tuple[str, str, str], str | None]] = {}
        self._kept: set[int] = set()
        self._listeners: list[sock_diag.DiagSocket] = []  # found by the last dump
        self._dumped_at = -LISTENERS_REFRESH
        self.dumped = False  # the last `listening` asked for every LISTEN socket on the ports

    def listening(self, ports: tuple[int, ...], now: float, dump: bool = False) -> dict[int, int]:
        """listen_backlogs(ports). The sockets the last dump found are asked for one by one
        (a hash lookup each) while every one of them is still there; a dump (a walk of every
        listening socket) when one is gone, none was found, on `dump`, or LISTENERS_REFRESH after
        the last one (a new socket next to the old ones shows within that)."""
        self.dumped = dump or not self._listeners or now - self._dumped_at >= LISTENERS_REFRESH
        if not self.dumped:
            again = [sock_diag.lookup(known) for known in self._listeners]
            if all(again):
                return {sock.inode: sock.queue for sock in again if sock is not None}
            self.dumped = True
        found = _listeners(ports)
        if found is None:
            self._listeners = []
            return _proc_backlogs(set(ports))
        self._listeners, self._dumped_at = found, now
        return {sock.inode: sock.queue for sock in found}

    def kid_name(self, look: Look) -> str | None:
        pid = look.info.pid
        known = self._names.get(pid)
        if known is not None and known[0] == look.image:
            return known[1]
        name = _kid_name(pid)
        if look.image[1] != "0":  # 0: /proc hides the argument area from us, read it each time
            self._names[pid] = (look.image, name)
        return name

    def keep_only(self, pids: set[int]) -> None:
        """Forget every other process (exited, or no longer Squid's)."""
        if pids == self._kept:
            return  # the same processes as at the last look: nothing to forget
        self._kept = pids
        self.processes.keep_only(pids)
        for pid in [pid for pid in self._names if pid not in pids]:
            del self._names[pid]

    def close(self) -> None:
        self.processes.close()


def _squid_processes(
    tree: list[Look], master: int, comm: str, readers: Readers
) -> dict[int, str | None] | None:
    """{pid: kid name (None: the master)} of the master and its kids; None when the master does not run.

    The master and its direct children only: a kid's own fork (before it execs a helper such as
    unlinkd) briefly looks like a Squid kid too, and would count as a kid exit.
    """
    name = comm[:15]  # /proc's comm is truncated to 15 characters
    if not tree or tree[0].info.comm != name or tree[0].info.state in ("Z", "X"):
        return None
    return {
        look.info.pid: readers.kid_name(look)
        for look in tree
        if look.info.comm == name and (look.info.pid == master or look.info.ppid == master)
    }


def _serving_candidates(tree: list[ProcessInfo], names: dict[int, str | None]) -> list[ProcessInfo]:
    """The master and the worker kids (not the SMP coordinator or diskers)."""
    return [
        p
        for p in tree
        if p.pid in names
        and not any(role in (names[p.pid] or "") for role in _NON_SERVING_KID_ROLES)
    ]


def _awake_holder(
    awake: list[ProcessInfo], listening: dict[int, int], hint: Holder | None
) -> Holder | None:
    """(pid, fd, link) of a runnable, not sleeping-uninterruptibly candidate holding a listening socket.

    `hint` is the previous observation's holder: while that worker still has that socket on that
    fd, it is still listening (a socket leaves LISTEN only by being closed) and no fd is read.
    """
    if hint is not None and any(p.pid == hint[0] for p in awake) and still_holds(*hint):
        return hint
    for process in awake if listening else []:
        held = held_socket(process.pid, listening)
        if held is not None:
            return (process.pid, *held)
    return None


def _unreadable(processes: list[ProcessInfo], listening: dict[int, int]) -> bool:
    return bool(listening) and any(not fds_readable(p.pid) for p in processes)


def _asleep_holders(
    candidates: list[ProcessInfo], listening: dict[int, int]
) -> tuple[tuple[int, int], ...]:
    """(pid, context switches) of the candidates in state D that hold a listening socket (or
    whose fds we may not read)."""
    asleep = [p for p in candidates if p.state == "D"]
    holding = [p for p in asleep if _unreadable([p], listening) or held_socket(p.pid, listening)]
    return tuple((p.pid, context_switches(p.pid)) for p in holding)


def _nobody_serves(
    candidates: list[ProcessInfo], listening: dict[int, int], ports: tuple[int, ...]
) -> str:
    port_list = _port_list(ports)
    holders = [
        p for p in candidates if not p.runnable and held_socket(p.pid, listening) is not None
    ]
    if holders:
        return f"no runnable Squid process listens on port {port_list} ({', '.join(_describe(p) for p in holders)})"
    return f"no Squid process listens on port {port_list}"


class Serving(NamedTuple):
    problem: str | None
    holder: Holder | None = None
    asleep: tuple[tuple[int, int], ...] = ()


def _serving(
    candidates: list[ProcessInfo],
    listening: dict[int, int],
    hint: Holder | None,
    ports: tuple[int, ...],
) -> Serving:
    """Whether a candidate serves: awake and holding the socket, else asleep (state D) holding it, else the problem."""
    awake = [p for p in candidates if p.runnable and p.state != "D"]
    holder = _awake_holder(awake, listening, hint)
    if holder is not None:
        return Serving(None, holder)
    if _unreadable(awake, listening):
        # Cannot tell which process holds the socket: a runnable worker and a listener on the
        # port is the best evidence left (startup already refused a squatter on the port).
        return Serving(None)
    asleep = _asleep_holders(candidates, listening)
    if asleep:
        return Serving(None, asleep=asleep)  # serving unless it stays so (SquidWatch)
    return Serving(_nobody_serves(candidates, listening, ports))


def _serving_now(
    readers: Readers,
    candidates: list[ProcessInfo],
    ports: tuple[int, ...],
    now: float,
    hint: Holder | None,
) -> tuple[Serving, dict[int, int]]:
    """_serving on the proxy port's LISTEN sockets (and those sockets); a look that asked only
    for the sockets known before and found no holder asks for all of them before it says so."""
    listening = readers.listening(ports, now)
    serving = _serving(candidates, listening, hint, ports)
    if serving.holder is None and not readers.dumped:
        listening = readers.listening(ports, now, dump=True)
        serving = _serving(candidates, listening, hint, ports)
    return serving, listening


def _port_list(ports: Iterable[int]) -> str:
    return ", ".join(str(port) for port in sorted(set(ports)))


def _no_master(now: float, pid: int | None, problem: str, ports: tuple[int, ...]) -> Observation:
    nobody = f"no Squid process listens on port {_port_list(ports)}"
    return Observation(now, pid, problem, nobody, frozenset())


def _master_pid(readers: Readers) -> int | str:
    """The pid file's pid, else why there is none."""
    try:
        pid = readers.pid_file.read()
    except PidFileError as error:  # never a hang or a huge read: a FIFO, symlink, 10 MB of digits
        return str(error)
    return f"no pid in {readers.pid_file.path}" if pid is None else pid


def _look(
    readers: Readers, comm: str, ports: tuple[int, ...], now: float, hint: Holder | None
) -> Observation:
    pid = _master_pid(readers)
    if isinstance(pid, str):
        readers.keep_only(set())
        return _no_master(now, None, pid, ports)
    tree = readers.processes.process_and_children(pid)  # nothing below the kids is looked at
    readers.keep_only({look.info.pid for look in tree})
    names = _squid_processes(tree, pid, comm, readers)
    if names is None:
        return _no_master(now, pid, f"squid pid {pid} is not running", ports)
    kids = frozenset(p for p, kid in names.items() if kid is not None)
    candidates = _serving_candidates([look.info for look in tree], names)
    serving, listening = _serving_now(readers, candidates, ports, now, hint)
    backlog = sum(listening.values())
    # Only with connections waiting: a worker that still reads and writes is working (an
    # overloaded Squid keeps a full queue), so a queue counts as stuck only without I/O.
    activity = io_syscalls(p.pid for p in candidates) if backlog else None
    return Observation(
        now, pid, None, serving.problem, kids, serving.holder, serving.asleep, backlog, activity
    )


def observe(
    pid_file: Path,
    comm: str,
    ports: Iterable[int],
    clock: Callable[[], float] = time.monotonic,
    hint: Holder | None = None,
    readers: Readers | None = None,
) -> Observation:
    """Squid's processes (the pid file's master and its tree), whether a runnable worker listens,
    and the proxy port's accept queue. `hint`: see `_awake_holder`; `readers`: what the
    previous looks kept (None: a look on its own)."""
    own = readers is None
    readers = Readers(pid_file) if readers is None else readers
    try:
        return _look(readers, comm, tuple(sorted(set(ports))), clock(), hint)
    finally:
        if own:
            readers.close()


def _queue_stuck(previous: Observation | None, seen: Observation) -> bool:
    """Since the previous look, the accept queue did not shrink and no candidate did any I/O."""
    if previous is None or not 0 < previous.backlog <= seen.backlog:
        return False
    return seen.activity is not None and seen.activity == previous.activity


class Stall:
    """Since when a condition has held without a break (None: it does not hold now)."""

    def __init__(self) -> None:
        self.since: float | None = None

    def fold(self, holds: bool, continues: bool, at: float) -> None:
        """`holds` now; `continues`: and it is the same condition as at the previous look."""
        if not holds:
            self.since = None
        elif self.since is None or not continues:
            self.since = at

    def lasted(self, at: float) -> float:
        return 0.0 if self.since is None else at - self.since


class SquidWatch:
    """Squid's liveness over time: sampled by a thread and by every probe, shared by both."""

    def __init__(
        self,
        pid_file: Path,
        comm: str,
        ports: Iterable[int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pid_file = pid_file
        self.comm = comm
        self.ports = tuple(ports)
        self.clock = clock
        self._readers = Readers(pid_file)
        self._lock = threading.Lock()
        self._previous: Observation | None = None
        self._not_serving = Stall()
        self._asleep = Stall()  # the same holders in state D, none of them woken up
        self._queued = Stall()  # connections waiting in the accept queue, never fewer
        self._kid_exits: collections.deque[float] = collections.deque()
        self.kid_exits_total = 0  # since this watch began, for /metrics

    def sample(self) -> Observation:
        """Look now and fold the observation into the history."""
        with self._lock:  # one look at a time, folded in the order taken
            previous = self._previous
            seen = observe(
                self.pid_file,
                self.comm,
                self.ports,
                self.clock,
                previous.holder if previous else None,
                self._readers,
            )
            if (
                seen.master_problem is not None
                or previous is None
                or previous.master_pid != seen.master_pid
            ):
                self._new_history()  # a new (or no) master: its start-up is not a crash loop
            else:
                self._kid_exits.extend(seen.at for _ in previous.kids - seen.kids)
                self.kid_exits_total += len(previous.kids - seen.kids)
            self._fold(previous, seen)
            self._previous = seen
        return seen

    @property
    def last(self) -> Observation | None:
        """The latest look (a probe's or the sampler's), without looking again."""
        return self._previous

    def _new_history(self) -> None:
        self._kid_exits.clear()
        self._not_serving, self._asleep, self._queued = Stall(), Stall(), Stall()

    def _fold(self, previous: Observation | None, seen: Observation) -> None:
        alive = seen.master_problem is None
        self._not_serving.fold(alive and seen.serving_problem is not None, True, seen.at)
        self._asleep.fold(
            bool(seen.asleep), previous is not None and previous.asleep == seen.asleep, seen.at
        )
        serving = alive and seen.serving_problem is None
        self._queued.fold(serving and seen.backlog > 0, _queue_stuck(previous, seen), seen.at)
        while self._kid_exits and self._kid_exits[0] < seen.at - CRASH_LOOP_WINDOW:
            self._kid_exits.popleft()

    def crash_loop(self) -> str | None:
        with self._lock:
            exits = len(self._kid_exits)
        if exits >= CRASH_LOOP_EXITS:
            return f"squid kids keep exiting ({exits} exits within {CRASH_LOOP_WINDOW:g} s)"
        return None

    def _stalled(self, seen: Observation, bound: float) -> str | None:
        """Why no worker made progress for `bound` s although one holds the socket, else None."""
        with self._lock:
            asleep, queued = self._asleep.lasted(seen.at), self._queued.lasted(seen.at)
        if seen.asleep and asleep >= bound:
            pids = ", ".join(str(pid) for pid, _ in seen.asleep)
            return f"squid worker pid {pids} made no progress in uninterruptible sleep (D) for {asleep:.0f} s"
        if queued >= bound:
            ports = ", ".join(str(port) for port in sorted(set(self.ports)))
            return (
                f"{seen.backlog} connections to port {ports} wait unaccepted"
                f" (accept queue not draining) for {queued:.0f} s"
            )
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
            not_serving = self._not_serving.lasted(seen.at)
        if seen.serving_problem is not None and not_serving >= LIVENESS_GRACE:
            return f"{seen.serving_problem} for {not_serving:.0f} s"
        return self._stalled(seen, LIVENESS_GRACE)

    def readiness_problems(self) -> list[str]:
        """Every reason Squid cannot take traffic right now, as `check: reason` (no grace; a
        worker that makes no progress after STALL_READY)."""
        seen = self.sample()
        problems = []
        squid = seen.master_problem or self.crash_loop()
        if squid is not None:
            problems.append(f"squid process: {squid}")
        port = seen.serving_problem or (None if squid else self._stalled(seen, STALL_READY))
        if port is not None:
            problems.append(f"proxy port: {port}")
        return problems

    def run_sampler(self, stop: threading.Event) -> None:
        """Sample every SAMPLE_INTERVAL until `stop`: time without serving counts without probes."""
        while not stop.wait(SAMPLE_INTERVAL):
            try:
                self.sample()
            except Exception:
                continue
