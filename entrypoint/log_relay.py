"""Relays a child's output pipe to one of PID 1's output sinks, line by line, through a filter.

The relay always reads (so the child never blocks on a full pipe) and hands whole lines to an
OutputSink, which drops rather than blocks when our own reader stalls. Every line is redacted
and has its control characters escaped (log_text) before it is written, whoever wrote it;
`line_filter` sees every line (without its newline) before that.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Any, Awaitable, Callable, Sequence

from entrypoint.log_text import safe_line
from entrypoint.output_sink import OutputSink
from entrypoint.processes import ChildProcesses

LineFilter = Callable[[str], str]
MAX_LINE_BYTES = 64 * 1024  # a longer "line" is passed on in pieces


def identity(line: str) -> str:
    return line


class LineRelay(asyncio.Protocol):
    """asyncio read-pipe protocol: bytes in, filtered lines out to `sink`."""

    def __init__(
        self, sink: OutputSink, line_filter: LineFilter = identity, collapse_pairs: bool = False
    ) -> None:
        self.sink = sink
        self.line_filter = line_filter
        # Drop the second of two identical consecutive lines (Squid's `-d 0` copy of a
        # cache.log line when cache.log is the same stderr); a third is kept.
        self.collapse_pairs = collapse_pairs
        self._previous: bytes | None = None
        self._partial = b""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._partial + data
        *lines, self._partial = buffer.split(b"\n")
        for line in lines:
            self._emit(line)
        while len(self._partial) > MAX_LINE_BYTES:
            self._emit(self._partial[:MAX_LINE_BYTES])
            self._partial = self._partial[MAX_LINE_BYTES:]

    def _emit(self, raw: bytes) -> None:
        if self.collapse_pairs:
            if raw == self._previous:
                self._previous = None
                return
            self._previous = raw
        text = raw.decode("utf-8", errors="surrogateescape")
        try:
            text = safe_line(self.line_filter(text))
        except Exception:  # a broken filter must not take PID 1 down; never leak the line
            text = "[line dropped: log filter failed]"
        self.sink.write_line(text.encode("utf-8", errors="replace") + b"\n")

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = b""
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def relayed_spawn(
    children: ChildProcesses, sinks: tuple[OutputSink, OutputSink]
) -> Callable[..., Awaitable[subprocess.Popen[bytes]]]:
    """A spawner whose children write stdout/stderr into pipes relayed line by line to `sinks`.

    Nobody but PID 1's sinks writes to the container's stdout/stderr, so no child can block on them.
    """

    async def spawn(argv: Sequence[str], **popen_options: Any) -> subprocess.Popen[bytes]:
        out_fd, out_relay = await children.open_pipe(lambda: LineRelay(sinks[0]))
        err_fd, err_relay = await children.open_pipe(lambda: LineRelay(sinks[1]))
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
