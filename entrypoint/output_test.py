"""PID 1's output path against real pipes: a stalled reader never blocks, drops are counted, lines are whole."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import select
import threading

from entrypoint.log_relay import LineRelay
from entrypoint.output_sink import OutputSink

PIPE_CAPACITY = 64 * 1024
WRITE_BOUND = 10.0  # seconds; the writes take milliseconds


def read_all(fd: int) -> bytes:
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        data = os.read(fd, 1 << 16)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def test_a_stalled_reader_never_blocks_and_drops_are_reported_once_it_is_back() -> None:
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_CAPACITY)
    sink = OutputSink(write_end, "stdout", limit_bytes=16 * 1024)
    line = b"x" * 99
    # 200 KB into 64 KB of pipe + 16 KB of queue: returns at once. Written in a thread so that
    # a write that blocks fails this test within a bound instead of hanging it.
    writer = threading.Thread(
        target=lambda: [sink.write_line(line) for _ in range(2000)], daemon=True
    )
    writer.start()
    writer.join(WRITE_BOUND)
    blocked = writer.is_alive()
    while writer.is_alive():  # unblock it (reading frees the pipe) before failing
        read_all(read_end)
    assert not blocked, f"write_line blocked on a full pipe for {WRITE_BOUND} s"
    assert sink.dropped > 0
    dropped = sink.dropped
    # The original descriptor is untouched (children sharing it still block normally).
    assert not fcntl.fcntl(write_end, fcntl.F_GETFL) & os.O_NONBLOCK
    first = read_all(read_end)
    assert sink.flush_for(5)
    text = (first + read_all(read_end)).decode()
    lines = text.splitlines()
    assert all(l == "x" * 99 for l in lines[:-1]), "a line was split or mangled"
    assert re.fullmatch(
        rf"\S+ \S+ \[WARNING\] dropped {dropped} log lines \(stdout reader stalled\)", lines[-1]
    )
    assert len(lines) - 1 + dropped == 2000
    sink.write_line(b"after")
    assert read_all(read_end) == b"after\n"  # reported once, then counting starts again
    for fd in (read_end, write_end, sink.fd):
        os.close(fd)


def test_relay_passes_whole_filtered_lines_from_split_chunks() -> None:
    async def scenario() -> bytes:
        out_read, out_write = os.pipe()
        sink = OutputSink(out_write, "stdout")
        sink.attach(asyncio.get_running_loop())
        child_read, child_write = os.pipe()
        relay = LineRelay(sink, lambda text: text.replace("secret", "[redacted]"))
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: relay, os.fdopen(child_read, "rb", 0)
        )
        for chunk in (b"one sec", b"ret line\ntwo", b"\nthree without newline"):
            os.write(child_write, chunk)
            await asyncio.sleep(0.05)
        os.close(child_write)
        await asyncio.wait_for(relay.closed, 5)
        sink.attach(None)
        data = read_all(out_read)
        os.close(out_read)
        os.close(out_write)
        os.close(sink.fd)
        return data

    assert asyncio.run(scenario()) == b"one [redacted] line\ntwo\nthree without newline\n"


def test_squid_style_doubled_lines_collapse_in_pairs_only() -> None:
    async def scenario() -> bytes:
        out_read, out_write = os.pipe()
        sink = OutputSink(out_write, "stderr")
        relay = LineRelay(sink, collapse_pairs=True)
        relay.data_received(b"a\na\nb\nb\nb\nc\n")
        data = read_all(out_read)
        for fd in (out_read, out_write, sink.fd):
            os.close(fd)
        return data

    assert asyncio.run(scenario()) == b"a\nb\nb\nc\n"
