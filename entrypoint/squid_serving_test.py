"""SquidWatch's decisions on real /proc: a stand-in Squid that never accepts, or is frozen in state D, fails /health after the grace."""

from __future__ import annotations

import builtins
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from entrypoint.squid_serving import LIVENESS_GRACE, STALL_READY, SquidWatch, listen_backlogs
from tests.entrypoint.freezer import freeze_problem, frozen

# A stand-in Squid master: listens on a port and never accepts, except one connection per line
# on stdin; the other busy one sleeps 10 ms at a time (so it wakes up often when it may).
NEVER_ACCEPTS = (
    "import socket, sys\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(64)\n"
    "print(s.getsockname()[1], flush=True)\n"
    "for line in sys.stdin:\n"
    "    s.accept()\n"
)
# Never accepts, but keeps doing I/O: an overloaded Squid busy with the connections it has.
WORKING = (
    "import socket, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(64)\n"
    "print(s.getsockname()[1], flush=True)\n"
    "zero = open('/dev/zero', 'rb', buffering=0)\n"
    "while True:\n"
    "    zero.read(1); time.sleep(0.01)\n"
)
# Closes its listening socket and opens another on the same port, once per line on stdin (what
# a reconfigure does).
REOPENS = (
    "import socket, sys\n"
    "def listen(port):\n"
    "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "    s.bind(('127.0.0.1', port)); s.listen(64); return s\n"
    "s = listen(0); port = s.getsockname()[1]\n"
    "print(port, flush=True)\n"
    "for line in sys.stdin:\n"
    "    s.close(); s = listen(port)\n"
    "    print('reopened', flush=True)\n"
)
BUSY = (
    "import socket, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(64)\n"
    "print(s.getsockname()[1], flush=True)\n"
    "while True:\n"
    "    time.sleep(0.01)\n"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StandIn:
    """A stand-in Squid with its pid file, and a SquidWatch on it driven by a fake clock."""

    def __init__(self, tmp_path: Path, program: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        comm = Path(f"/proc/{self.process.pid}/comm").read_text().strip()
        pid_file = tmp_path / "squid.pid"
        pid_file.write_text(f"{self.process.pid}\n")
        self.clock = FakeClock()
        self.watch = SquidWatch(pid_file, comm, [self.port], clock=self.clock)
        self.clients: list[socket.socket] = []

    def queue(self, count: int) -> None:
        """`count` connections that the kernel completes and queues (nobody accepts them)."""
        self.clients += [
            socket.create_connection(("127.0.0.1", self.port), 5) for _ in range(count)
        ]

    def at(self, seconds: float) -> SquidWatch:
        self.clock.now = 1000.0 + seconds
        return self.watch

    def accept_one(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"\n")
        self.process.stdin.flush()

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def never_accepts(tmp_path: Path) -> Iterator[StandIn]:
    stand_in = StandIn(tmp_path, NEVER_ACCEPTS)
    yield stand_in
    stand_in.close()


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[StandIn]:
    problem = freeze_problem()
    if problem:
        pytest.skip(problem)
    stand_in = StandIn(tmp_path, BUSY)
    yield stand_in
    stand_in.close()


def backlog(port: int) -> int:
    return sum(listen_backlogs([port]).values())


def test_the_accept_queue_is_read_from_the_listen_row(never_accepts: StandIn) -> None:
    assert backlog(never_accepts.port) == 0
    never_accepts.queue(3)
    assert backlog(never_accepts.port) == 3
    never_accepts.accept_one()
    assert _wait(lambda: backlog(never_accepts.port) == 2)


def test_connections_never_accepted_fail_ready_then_health_after_the_grace(
    never_accepts: StandIn,
) -> None:
    assert never_accepts.at(0).liveness_problem() is None
    never_accepts.queue(3)
    assert never_accepts.at(0.5).liveness_problem() is None
    assert never_accepts.at(0.5).readiness_problems() == []  # one look proves nothing
    problems = never_accepts.at(0.5 + STALL_READY).readiness_problems()
    assert problems == [
        f"proxy port: 3 connections to port {never_accepts.port} wait unaccepted (accept queue not draining) for 2 s"
    ]
    for second in range(3, 11):  # sampled every second, as the sampler does
        assert never_accepts.at(second).liveness_problem() is None, second
    problem = never_accepts.at(0.5 + LIVENESS_GRACE).liveness_problem()
    assert (
        problem
        == f"3 connections to port {never_accepts.port} wait unaccepted (accept queue not draining) for 10 s"
    )
    never_accepts.queue(1)  # more waiting is no progress either
    assert never_accepts.at(12).liveness_problem() is not None


def test_a_draining_accept_queue_is_progress(never_accepts: StandIn) -> None:
    never_accepts.queue(3)
    assert never_accepts.at(0).liveness_problem() is None
    never_accepts.accept_one()  # slow, but it accepts: the queue shrinks
    assert _wait(lambda: backlog(never_accepts.port) == 2)
    assert never_accepts.at(6).liveness_problem() is None
    assert never_accepts.at(12).liveness_problem() is None  # 6 s since it last drained
    never_accepts.accept_one()
    never_accepts.accept_one()
    assert _wait(lambda: backlog(never_accepts.port) == 0)
    assert never_accepts.at(20).liveness_problem() is None
    assert never_accepts.at(20).readiness_problems() == []


def test_a_full_queue_while_the_worker_keeps_working_is_not_a_stall(tmp_path: Path) -> None:
    """A queue that stays full is what an overloaded (or flooded) Squid shows too: as long as a
    worker does I/O it is working, and failing /health would only restart it under load."""
    working = StandIn(tmp_path, WORKING)
    try:
        working.queue(3)
        for second in range(15):
            time.sleep(0.05)  # ~5 reads between looks
            assert working.at(second).liveness_problem() is None, second
        assert working.at(15).readiness_problems() == []
    finally:
        working.close()


def test_a_worker_frozen_in_state_d_fails_ready_then_health_after_the_grace(busy: StandIn) -> None:
    assert busy.at(0).liveness_problem() is None
    with frozen(busy.process.pid):
        assert _state(busy.process.pid) == "D"  # what hung storage (or the freezer) shows
        assert busy.at(1).liveness_problem() is None
        assert busy.at(1).readiness_problems() == []
        problems = busy.at(1 + STALL_READY).readiness_problems()
        assert len(problems) == 1 and problems[0].startswith(
            f"proxy port: squid worker pid {busy.process.pid} made no progress in uninterruptible sleep (D)"
        ), problems
        assert busy.at(1 + LIVENESS_GRACE - 0.5).liveness_problem() is None
        problem = busy.at(1 + LIVENESS_GRACE).liveness_problem()
        assert (
            problem
            == f"squid worker pid {busy.process.pid} made no progress in uninterruptible sleep (D) for 10 s"
        )
    assert _wait(lambda: _state(busy.process.pid) != "D")
    assert busy.at(12).liveness_problem() is None  # awake again: serving at once
    assert busy.at(12).readiness_problems() == []


def test_a_worker_in_state_d_that_wakes_up_in_between_is_progress(busy: StandIn) -> None:
    with frozen(busy.process.pid):
        assert busy.at(0).liveness_problem() is None
    time.sleep(0.2)  # it runs: ~20 sleeps, each a context switch
    with frozen(busy.process.pid):
        assert busy.at(6).liveness_problem() is None
        assert busy.at(12).liveness_problem() is None  # 6 s without a switch, not 12
        assert busy.at(16.5).liveness_problem() is not None


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()[0]


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- what a look keeps from the previous one (each probe looks: this is what makes it cheap) ----


def test_a_look_with_nothing_changed_opens_no_file(
    never_accepts: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc files held open (one pread each), the pid file's answer kept while an lstat shows
    the same settled file, kid names kept per process image, the listening socket asked for
    directly: a probe's look opens and lists nothing."""
    time.sleep(1.1)  # a pid file written within the last second is read again at every look
    assert never_accepts.at(0).liveness_problem() is None
    opened: list[str] = []
    real_open, real_os_open, real_listdir = builtins.open, os.open, os.listdir

    def spy(real: Any) -> Any:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            opened.append(str(path))
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(builtins, "open", spy(real_open))
    monkeypatch.setattr(os, "open", spy(real_os_open))
    monkeypatch.setattr(os, "listdir", spy(real_listdir))
    assert never_accepts.at(0.5).liveness_problem() is None
    assert never_accepts.at(0.6).readiness_problems() == []
    assert opened == []


def test_a_killed_master_fails_at_once(never_accepts: StandIn) -> None:
    assert never_accepts.at(0).liveness_problem() is None
    pid = never_accepts.process.pid
    never_accepts.process.kill()
    assert _wait(lambda: _state(pid) == "Z")
    assert never_accepts.at(0.1).liveness_problem() == f"squid pid {pid} is not running"
    never_accepts.process.wait(10)  # reaped: its held /proc files now read ESRCH
    assert never_accepts.at(0.2).liveness_problem() == f"squid pid {pid} is not running"


def test_a_pid_file_rewritten_at_once_is_read_again(never_accepts: StandIn, tmp_path: Path) -> None:
    """Two writes within one clock tick leave the same size and times: a read of a file that
    changed under a second before is never kept, so an impostor's pid is seen at once."""
    pid_file = tmp_path / "squid.pid"
    impostor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for round_ in range(20):
            pid_file.write_text(f"{impostor.pid:>8}\n")  # the same size as the real one
            problems = never_accepts.at(round_).readiness_problems()
            assert problems == [
                f"proxy port: no Squid process listens on port {never_accepts.port}"
            ], round_
            pid_file.write_text(f"{never_accepts.process.pid:>8}\n")
            assert never_accepts.at(round_ + 0.5).readiness_problems() == [], round_
    finally:
        impostor.kill()
        impostor.wait(10)


def test_a_listening_socket_closed_and_opened_again_is_followed_at_once(tmp_path: Path) -> None:
    """A look asks the kernel for the socket the last dump found; once that one is gone (a
    reconfigure), the same look finds the new one and reads its queue."""
    reopens = StandIn(tmp_path, REOPENS)
    try:
        assert reopens.at(0).readiness_problems() == []
        reopens.accept_one()
        assert reopens.process.stdout is not None
        assert reopens.process.stdout.readline() == b"reopened\n"
        reopens.queue(3)
        assert reopens.at(0.1).readiness_problems() == []
        assert reopens.watch.last is not None and reopens.watch.last.backlog == 3
    finally:
        reopens.close()
