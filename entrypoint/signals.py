"""Signals to PID 1: SIGTERM/SIGINT stop (a second one forces), SIGHUP reloads, others are fatal.

`record_early` is what entrypoint.py installs before any heavy import; `SignalRouter.install`
takes over once the event loop runs and replays what was recorded meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import FrameType
from typing import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Every signal another process can send whose default action would end PID 1 without stopping
# its children (terminate or core): caught only when we are not PID 1 (as PID 1 the kernel never
# delivers them with their default action). Not the faults the CPU raises (SIGSEGV, SIGBUS,
# SIGILL, SIGFPE, SIGABRT: handling those in Python could loop), nor SIGPIPE and SIGXFSZ, which
# Python ignores; the real-time signals all terminate by default.
_TERMINATING = (
    "SIGQUIT",
    "SIGUSR1",
    "SIGUSR2",
    "SIGALRM",
    "SIGTRAP",
    "SIGSTKFLT",
    "SIGXCPU",
    "SIGVTALRM",
    "SIGPROF",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
)
FATAL_SIGNALS = tuple(
    dict.fromkeys(getattr(signal, name) for name in _TERMINATING if hasattr(signal, name))
) + tuple(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))


def signal_name(signum: int) -> str:
    """SIGTERM, ..., SIGRTMIN+2 (the enum names only SIGRTMIN and SIGRTMAX of the real-time ones)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"


def record_early(received: list[int]) -> None:
    """Record SIGTERM/SIGINT/SIGHUP into `received` until the event loop takes over."""

    def remember(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    for signum in (*STOP_SIGNALS, signal.SIGHUP):
        signal.signal(signum, remember)


class SignalRouter:
    def __init__(
        self,
        log: logging.Logger,
        on_reload: Callable[[], None],
        on_fatal: Callable[[int], None],
    ) -> None:
        self.log = log
        self.on_reload = on_reload
        self.on_fatal = on_fatal
        self.stops_received = 0
        self.shutdown_requested = asyncio.Event()
        self.force = asyncio.Event()
        self.listeners: list[Callable[[], None]] = []  # called on the first stop signal

    def install(self, pending: list[int]) -> None:
        loop = asyncio.get_running_loop()
        for signum in (*STOP_SIGNALS, signal.SIGHUP):
            loop.add_signal_handler(signum, self.dispatch, signum)
        if os.getpid() != 1:
            for signum in FATAL_SIGNALS:
                loop.add_signal_handler(signum, self.on_fatal, signum)
        while pending:  # arrived before the event loop took over
            self.dispatch(pending.pop(0))

    def dispatch(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            self.on_reload()
            return
        self.stops_received += 1
        if self.stops_received == 1:
            self.log.info("Received signal %s, initiating graceful shutdown...", name)
            self.shutdown_requested.set()
            for listener in self.listeners:
                listener()
        else:
            self.log.warning("Received signal %s again, killing Squid now", name)
            self.force.set()
