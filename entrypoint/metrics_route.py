"""`GET /metrics` for the health server: the scrape runs on one worker thread, the event loop only hands answers out.

The health server's loop must never block, and reading Squid's cache manager can take up to
MANAGER_TIMEOUT. So a scrape request is parked here, one worker thread collects (every scrape
that arrives meanwhile joins the one in flight: 100 parallel scrapes cost one collection), and
a byte on a socketpair wakes the loop, which renders once and answers every parked client.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable

from entrypoint.exposition import CONTENT_TYPE, Family, render
from entrypoint.metrics import MANAGER_TIMEOUT
from entrypoint.threads import start_daemon_thread

SCRAPE_DEADLINE = (
    MANAGER_TIMEOUT + 3.0
)  # a parked client gets 503 after this, whatever the worker does
MAX_PARKED = (
    128  # scrapes parked at once; more get 503 at once (the health server holds 256 clients)
)

log = logging.getLogger("cephaloproxy.health")


@dataclasses.dataclass
class Reply:
    """What a parked client gets: status, body and its content type."""

    status: int
    body: str
    content_type: str = CONTENT_TYPE


@dataclasses.dataclass
class Parked:
    client: object
    deadline: float


class MetricsRoute:
    """Parks scrape requests, runs collections on its worker thread, gives back (client, Reply) pairs on the loop."""

    def __init__(
        self, collect: Callable[[], list[Family]], local: Callable[[], list[Family]]
    ) -> None:
        self.collect = collect  # on the worker thread (may block, bounded)
        self.local = local  # on the loop (cheap: what a probe costs)
        self.parked: list[Parked] = []
        # Set lower by the health server: parked clients hold descriptors too, and may use at
        # most half of its connection limit (the rest, and FD_RESERVE, stay for the probes).
        self.max_parked = MAX_PARKED
        self.wakeup, self._notify = socket.socketpair()
        self.wakeup.setblocking(False)
        self._notify.setblocking(False)
        self._lock = threading.Lock()
        self._go = threading.Event()
        self._busy = False
        self._result: str | None = None  # the collection, rendered on the worker
        self._thread: threading.Thread | None = None

    def park(self, client: object) -> Reply | None:
        """Take a scrape: None when parked (answered by `finished`), else the immediate Reply (503)."""
        if len(self.parked) >= self.max_parked:
            return Reply(503, "Too many scrapes at once; retry\n", "text/plain; charset=utf-8")
        if not self._start_worker():
            return Reply(
                503,
                "Metrics unavailable: the health server cannot start its metrics thread"
                " (process limit RLIMIT_NPROC / pids.max reached)\n",
                "text/plain; charset=utf-8",
            )
        self.parked.append(Parked(client, time.monotonic() + SCRAPE_DEADLINE))
        with self._lock:
            if not self._busy:
                self._busy = True
                self._go.set()
        return None

    def finished(self) -> list[tuple[object, Reply]]:
        """On the wakeup: the collection's answer for every parked client (rendered once)."""
        try:
            while self.wakeup.recv(64):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._lock:
            collected, self._result = self._result, None
        if collected is None or not self.parked:
            return []
        try:
            reply = Reply(200, collected + render(self.local()))
        except Exception:
            log.exception("Metrics could not be rendered")
            reply = Reply(
                503,
                "Metrics could not be rendered; see the health server's log\n",
                "text/plain; charset=utf-8",
            )
        parked, self.parked = self.parked, []
        return [(entry.client, reply) for entry in parked]

    def expired(self, now: float) -> list[tuple[object, Reply]]:
        """Parked clients past SCRAPE_DEADLINE: 503 (the worker is stuck beyond its own timeouts)."""
        late = [entry for entry in self.parked if entry.deadline <= now]
        if not late:
            return []
        self.parked = [entry for entry in self.parked if entry.deadline > now]
        reply = Reply(503, "Metrics scrape took too long\n", "text/plain; charset=utf-8")
        return [(entry.client, reply) for entry in late]

    def next_deadline(self) -> float | None:
        return min((entry.deadline for entry in self.parked), default=None)

    def _start_worker(self) -> bool:
        if self._thread is not None:
            return True
        try:
            thread = start_daemon_thread(self._work, "metrics")
        except RuntimeError as error:  # "can't start new thread": EAGAIN from the kernel
            log.error(
                "Health server cannot start its metrics thread (%s): raise the process limit", error
            )
            return False
        self._thread = thread
        return True

    def _work(self) -> None:
        while True:
            self._go.wait()
            self._go.clear()
            try:
                collected = render(self.collect())  # here, not on the loop
            except Exception:
                log.exception("Metrics collection failed")
                collected = ""
            with self._lock:
                self._result = collected
                self._busy = False
            try:
                self._notify.send(b"!")
            except (BlockingIOError, InterruptedError):
                pass  # a wakeup is already pending

    def close(self) -> None:
        self.wakeup.close()
        self._notify.close()
