"""Relays a child's output pipe to one of PID 1's output sinks, line by line, through a filter.

The relay always reads (so the child never blocks on a full pipe: it rests at most BATCH_WAIT
between reads, and the pipe is enlarged to hold that much) and hands whole lines to an
OutputSink, which drops rather than blocks when our own reader stalls. Every line is redacted
and has its control characters escaped (log_text) before it is written, whoever wrote it;
`line_filter` sees every line (without its newline) before that. `render` is that last step:
log_text.safe_line, or with LOG_FORMAT=json one of log_json's renderers (which apply it too).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from entrypoint.log_text import safe_line, safe_lines
from entrypoint.output_sink import OutputSink
from entrypoint.processes import ChildProcesses

LineFilter = Callable[[str], str]
LineRender = Callable[[str], str]  # a filtered line -> the safe line written (no newline)
MAX_LINE_BYTES = 64 * 1024  # a longer line is written in pieces of this size (after redaction)
# A line is held whole up to this, so redaction sees all of it: a secret cut in two by a piece
# boundary would pass as two harmless halves. A longer line is dropped, a note says so
# (redacting it would also hold PID 1's loop: ~1 s per MiB of hostile text).
MAX_HELD_BYTES = 4 * MAX_LINE_BYTES
# Squid writes each access-log line on its own (buffered_logs off): read at once, every line
# would cost PID 1 a wakeup, a read, a write and a timer (measured: 18-22 us per line at 2 ms,
# 6 us at 20 ms, on a loaded 2-core machine). After a small read the relay rests this long, so
# the lines written meanwhile arrive as one batch: one read, one look, one write. A log line is
# at most this late; a read of BATCH_READ_BYTES or more (output flowing fast) is followed at once.
BATCH_WAIT = 0.02
SHORT_BATCH_WAIT = 0.002  # when the pipe could not be enlarged (64 KiB hold 32 MB/s for 2 ms)
BATCH_READ_BYTES = 16 * 1024
# The pipe holds what a child writes while the relay rests: 1 MiB (the unprivileged maximum)
# holds 50 MB/s for BATCH_WAIT, so the child still never blocks on it.
PIPE_BYTES = 1 << 20


def identity(line: str) -> str:
    return line


class LineRelay(asyncio.Protocol):
    """asyncio read-pipe protocol: bytes in, filtered lines out to `sink`."""

    def __init__(
        self,
        sink: OutputSink,
        line_filter: LineFilter = identity,
        collapse_pairs: bool = False,
        render: LineRender = safe_line,
    ) -> None:
        self.sink = sink
        self.line_filter = line_filter
        self.render = render
        # Drop the second of two identical consecutive lines that arrive in one read (Squid's
        # `-d 0` copy of a cache.log line when cache.log is the same stderr, written right after
        # it); a third is kept, and so is a repeat in a later read (another event).
        self.collapse_pairs = collapse_pairs
        self._previous: bytes | None = None
        self._partial = b""
        self._skipping = 0  # bytes of an overlong line dropped so far (0: not in one)
        self._resting = False
        self._rest = SHORT_BATCH_WAIT
        self._rests = True  # False once the end is awaited: EOF is seen at once then
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        pipe = transport.get_extra_info("pipe")
        try:
            if fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES) >= PIPE_BYTES:
                self._rest = BATCH_WAIT
        except (AttributeError, OSError, ValueError):
            pass  # not a pipe, or over the user's pipe-buffer quota: the default size, short rests

    def data_received(self, data: bytes) -> None:
        self._take(data)
        if (
            self._rests
            and len(data) < BATCH_READ_BYTES
            and isinstance(self.transport, asyncio.ReadTransport)
            and not self._resting
        ):
            self.transport.pause_reading()
            self._resting = True
            asyncio.get_running_loop().call_later(self._rest, self._resume)

    def stop_resting(self) -> None:
        """Read at once from now on (the child is stopping: its last lines and EOF without delay)."""
        self._rests = False
        self._resume()

    def _resume(self) -> None:
        self._resting = False
        if isinstance(self.transport, asyncio.ReadTransport) and not self.transport.is_closing():
            self.transport.resume_reading()  # a no-op when not paused

    def _take(self, data: bytes) -> None:
        lines: list[bytes] = []
        if self._skipping:  # the rest of an overlong line, up to its newline
            end = data.find(b"\n")
            if end < 0:
                self._skipping += len(data)
                return
            lines.append(self._dropped_note(self._skipping + end))
            self._skipping, data = 0, data[end + 1 :]
        buffer = self._partial + data
        *complete, self._partial = buffer.split(b"\n")
        if len(buffer) > MAX_HELD_BYTES:  # only then can a line be too long (one look per line)
            complete = [
                self._dropped_note(len(raw)) if len(raw) > MAX_HELD_BYTES else raw
                for raw in complete
            ]
        lines += complete
        if len(self._partial) > MAX_HELD_BYTES:
            self._skipping, self._partial = len(self._partial), b""
        if lines:
            self._emit_all(lines)
        if self.collapse_pairs:
            self._previous = None  # Squid writes a pair back to back: they arrive in one read

    @staticmethod
    def _dropped_note(size: int) -> bytes:
        return f"[a line of {size} bytes dropped: longer than {MAX_HELD_BYTES}]".encode()

    def _emit_all(self, raws: list[bytes]) -> None:
        """Every line filtered, made safe and queued; all that arrived together as one write."""
        if self.collapse_pairs:
            raws = self._collapsed(raws)
        try:
            texts = [
                self.line_filter(raw.decode("utf-8", errors="surrogateescape")) for raw in raws
            ]
        except (
            Exception
        ):  # a broken filter must not take PID 1 down: line by line, to drop only its line
            for raw in raws:
                self._emit(raw)
            return
        # The text format's batch check looks at all lines at once; another format renders each.
        rendered = (
            safe_lines(texts) if self.render is safe_line else [self.render(t) for t in texts]
        )
        if max(map(len, rendered)) <= MAX_LINE_BYTES:  # no line to cut: one block, no per-line work
            self.sink.write_block(("\n".join(rendered) + "\n").encode("utf-8", errors="replace"))
        else:
            self.sink.write_lines([piece for text in rendered for piece in _pieces(text)])

    def _collapsed(self, raws: list[bytes]) -> list[bytes]:
        kept = []
        for raw in raws:
            if raw == self._previous:
                self._previous = None
                continue
            self._previous = raw
            kept.append(raw)
        return kept

    def _emit(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="surrogateescape")
        try:
            text = self.render(self.line_filter(text))
        except Exception:  # a broken filter must not take PID 1 down; never leak the line
            text = self.render("[line dropped: log filter failed]")
        self.sink.write_lines(_pieces(text))

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._skipping:
            self._emit(self._dropped_note(self._skipping))
            self._skipping = 0
        if self._partial:  # a last line without its newline
            self._emit(self._partial)
            self._partial = b""
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _pieces(text: str) -> list[bytes]:
    """A rendered (already redacted) line as output lines of at most MAX_LINE_BYTES characters."""
    if len(text) <= MAX_LINE_BYTES:
        return [text.encode("utf-8", errors="replace") + b"\n"]
    return [
        text[start : start + MAX_LINE_BYTES].encode("utf-8", errors="replace") + b"\n"
        for start in range(0, len(text), MAX_LINE_BYTES)
    ]


def relayed_spawn(
    children: ChildProcesses, sinks: tuple[OutputSink, OutputSink], render: LineRender = safe_line
) -> Callable[..., Awaitable[subprocess.Popen[bytes]]]:
    """A spawner whose children write stdout/stderr into pipes relayed line by line to `sinks`.

    Nobody but PID 1's sinks writes to the container's stdout/stderr, so no child can block on them.
    """

    async def spawn(argv: Sequence[str], **popen_options: Any) -> subprocess.Popen[bytes]:
        out_fd, out_relay = await children.open_pipe(lambda: LineRelay(sinks[0], render=render))
        err_fd, err_relay = await children.open_pipe(lambda: LineRelay(sinks[1], render=render))
        try:
            return children.spawn(argv, stdout=out_fd, stderr=err_fd, **popen_options)
        except BaseException:
            out_relay.close()  # no child: the read ends would leak with every failed restart
            err_relay.close()
            raise
        finally:
            os.close(out_fd)
            os.close(err_fd)

    return spawn
