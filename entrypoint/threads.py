"""Helper threads that never take a process-directed signal, so the main thread always gets it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

# Faults are delivered to the thread that causes them, and SIGKILL/SIGSTOP cannot be blocked.
_NOT_BLOCKED = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGKILL, signal.SIGSTOP}
)


def start_daemon_thread(
    target: Callable[..., object], name: str, args: tuple[object, ...] = ()
) -> threading.Thread:
    """Start `target(*args)` in a daemon thread with every asynchronous signal blocked in it.

    The kernel hands a process-directed signal (the runtime's SIGTERM) to any thread that does
    not block it, and Python runs handlers only in the main thread: a signal another thread took
    does not interrupt the main thread's select(), so a health server whose sampler thread took
    SIGTERM slept on until PID 1's SIGKILL 5 s later. The thread inherits the mask set around
    start(). A process started from such a thread would inherit it too: start children from the
    main thread only. RuntimeError when no thread can be had, as threading.Thread.start.
    """
    thread = threading.Thread(target=target, name=name, args=args, daemon=True)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - _NOT_BLOCKED)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return thread
