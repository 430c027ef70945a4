"""Non-blocking, bounded, line-wise writer for one of PID 1's output fds (stdout or stderr).

A container's stdout is a pipe the runtime may stop reading. Writing to it must never block
PID 1 (a blocked PID 1 ignores SIGTERM and stops relaying Squid's output, which stalls Squid):
lines are queued up to a byte limit and written when the fd is writable; when the queue is full
new lines are dropped and counted, and once the reader is back one line says how many.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import os
import select
import stat
import time
from collections.abc import Callable
from typing import Any, Protocol

DEFAULT_LIMIT_BYTES = 256 * 1024


def text_notice(message: str) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M:%S')} [WARNING] {message}"


class _Loop(Protocol):
    def add_writer(self, fd: int, callback: Callable[..., object], *args: Any) -> None: ...
    def remove_writer(self, fd: int) -> bool: ...


def nonblocking_fd(fd: int) -> int:
    """A descriptor for `fd`'s file whose writes never block.

    For a pipe, reopen it through /proc (a private open file description, so children that
    share the original keep their blocking writes); when that is refused (a pipe owned by
    another UID) or for anything else but a regular file, dup it and set O_NONBLOCK.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return -1
    if stat.S_ISREG(mode):
        return os.dup(fd)  # a file never keeps a writer waiting
    if stat.S_ISFIFO(mode):
        try:
            return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            pass
    duplicate = os.dup(fd)
    flags = fcntl.fcntl(duplicate, fcntl.F_GETFL)
    fcntl.fcntl(duplicate, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    return duplicate


class OutputSink:
    """Queues whole lines for one fd and writes them without ever blocking the caller."""

    def __init__(self, fd: int, name: str, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.fd = nonblocking_fd(fd)
        self.name = name
        self.limit_bytes = limit_bytes
        self._queue: collections.deque[memoryview] = collections.deque()
        self._queued_bytes = 0
        self.dropped = 0  # lines dropped since the last notice
        self.dropped_total = 0
        self._loop: _Loop | None = None
        self._watching = False
        self._broken = self.fd < 0
        self.render_notice: Callable[[str], str] = (
            text_notice  # the log format's (logs.configure_logging)
        )

    def attach(self, loop: _Loop | None) -> None:
        """Flush through `loop` (add_writer) from now on; None detaches (before the loop closes)."""
        if self._watching and self._loop is not None:
            self._loop.remove_writer(self.fd)
            self._watching = False
        self._loop = loop
        self._flush()

    def write_line(self, line: bytes) -> None:
        """Queue one line (a newline is added when missing); drop it when the queue is full."""
        if self._broken:
            return
        if not line.endswith(b"\n"):
            line += b"\n"
        if self._queued_bytes + len(line) > self.limit_bytes:
            self.dropped += 1
            self.dropped_total += 1
            return
        self._queue.append(memoryview(line))
        self._queued_bytes += len(line)
        if not self._watching:
            self._flush()

    def write_lines(self, lines: list[bytes]) -> None:
        """Queue several lines (each ends with a newline) as one write: each is queued or dropped
        whole, as by write_line, but the kernel sees one write() for all that fit."""
        if self._broken:
            return
        kept: list[bytes] = []
        queued = self._queued_bytes
        for line in lines:
            if queued + len(line) > self.limit_bytes:
                self.dropped += 1
                self.dropped_total += 1
                continue
            kept.append(line)
            queued += len(line)
        if not kept:
            return
        self._queue.append(memoryview(b"".join(kept)))
        self._queued_bytes = queued
        if not self._watching:
            self._flush()

    def write_block(self, block: bytes) -> None:
        """Queue several lines joined (each ends with a newline): whole when all fit (the common
        case: no per-line work), else line by line as write_lines drops them."""
        if self._broken or not block:
            return
        if self._queued_bytes + len(block) > self.limit_bytes:
            self.write_lines([line + b"\n" for line in block.split(b"\n")[:-1]])
            return
        self._queue.append(memoryview(block))
        self._queued_bytes += len(block)
        if not self._watching:
            self._flush()

    def _notice(self) -> bytes:
        message = f"dropped {self.dropped} log lines ({self.name} reader stalled)"
        return f"{self.render_notice(message)}\n".encode()

    def _flush(self) -> None:
        while self._queue and not self._broken:
            head = self._queue[0]
            try:
                written = os.write(self.fd, head)
            except BlockingIOError:
                self._watch()
                return
            except InterruptedError:
                continue
            except OSError as error:
                # EPIPE/EBADF: nobody will ever read this again; stop trying (and queuing).
                if error.errno in (errno.EPIPE, errno.EBADF, errno.EIO, errno.ENOSPC):
                    self._broken = True
                    self._queue.clear()
                    self._queued_bytes = 0
                self._unwatch()
                return
            self._queued_bytes -= written
            if written == len(head):
                self._queue.popleft()
            else:
                self._queue[0] = head[written:]
            if not self._queue and self.dropped:
                # The reader caught up with everything queued: say what it missed.
                notice = self._notice()
                self.dropped = 0
                self._queue.append(memoryview(notice))
                self._queued_bytes += len(notice)
        self._unwatch()

    def _watch(self) -> None:
        if self._loop is not None and not self._watching:
            self._loop.add_writer(self.fd, self._flush)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching and self._loop is not None:
            self._loop.remove_writer(self.fd)
        self._watching = False

    @property
    def pending_bytes(self) -> int:
        return self._queued_bytes

    def flush_for(self, timeout: float) -> bool:
        """Best-effort final flush without an event loop: wait up to `timeout` for the reader."""
        self.attach(None)
        deadline = time.monotonic() + timeout
        while self._queue and not self._broken:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                select.select([], [self.fd], [], remaining)
            except (OSError, ValueError):
                return False
            self._flush()
        return not self._queue
