"""Whether Squid serves, read from /proc alone: its processes, their states, who holds the proxy's LISTEN socket.

No connection to Squid is ever made (a TCP connect is accepted by the kernel even when no Squid
process can answer, and leaves an `error:transaction-end-before-headers` line in the access log).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from entrypoint.proc_table import TCP_LISTEN, ProcessInfo, process_tree, socket_inodes, tcp_sockets

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


def read_pid(path: Path) -> int | None:
    # squid_process.read_pid_file does the same, but importing it would load asyncio into the server.
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


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


def _describe(process: ProcessInfo) -> str:
    return f"pid {process.pid} {_STATE_NAMES.get(process.state, process.state)}"


def observe(pid_file: Path, comm: str, ports: Iterable[int], clock: Callable[[], float] = time.monotonic) -> Observation:
    """Squid's processes (the pid file's master and its tree) and whether a runnable worker listens."""
    now = clock()
    wanted = set(ports)
    port_list = ", ".join(str(port) for port in sorted(wanted))
    nobody = f"no Squid process listens on port {port_list}"
    pid = read_pid(pid_file)
    if pid is None:
        return Observation(now, None, f"no pid in {pid_file}", nobody, frozenset())
    name = comm[:15]  # /proc's comm is truncated to 15 characters
    tree = process_tree(pid)
    if not tree or tree[0].comm != name or tree[0].state in ("Z", "X"):
        return Observation(now, pid, f"squid pid {pid} is not running", nobody, frozenset())
    squids = [p for p in tree if p.comm == name]
    kid_names = {p.pid: _kid_name(p.pid) for p in squids}
    kids = frozenset(p for p, kid in kid_names.items() if kid is not None)
    listening = {s.inode for s in tcp_sockets() if s.state == TCP_LISTEN and s.local_port in wanted}
    holders = [
        p for p in squids
        if not any(role in (kid_names[p.pid] or "") for role in _NON_SERVING_KID_ROLES)
        and socket_inodes([p.pid]) & listening
    ]
    if any(p.runnable for p in holders):
        problem = None
    elif holders:
        problem = (
            f"no runnable Squid process listens on port {port_list}"
            f" ({', '.join(_describe(p) for p in holders)})"
        )
    else:
        problem = nobody
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
            seen = observe(self.pid_file, self.comm, self.ports, self.clock)
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
