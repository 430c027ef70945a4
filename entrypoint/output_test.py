"""PID 1's output path against real pipes: a stalled reader never blocks, drops are counted, lines are whole."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import re
import select
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrypoint import log_json, log_relay, output_sink, redact
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
    assert all(ln == "x" * 99 for ln in lines[:-1]), "a line was split or mangled"
    assert re.fullmatch(
        rf"\S+ \S+ \[WARNING\] dropped {dropped} log lines \(stdout reader stalled\)", lines[-1]
    )
    assert len(lines) - 1 + dropped == 2000
    sink.write_line(b"after")
    assert read_all(read_end) == b"after\n"  # reported once, then counting starts again
    for fd in (read_end, write_end, sink.fd):
        os.close(fd)


def _collected(out_read: int, out_write: int, sink: OutputSink) -> bytes:
    """What reached our side's pipe; its ends and the sink's fd closed."""
    data = read_all(out_read)
    for fd in (out_read, out_write, sink.fd):
        os.close(fd)
    return data


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
        return _collected(out_read, out_write, sink)

    assert asyncio.run(scenario()) == b"one [redacted] line\ntwo\nthree without newline\n"


def test_squid_style_doubled_lines_collapse_in_pairs_only() -> None:
    assert _relayed_reads([b"a\na\nb\nb\nb\nc\n"], collapse_pairs=True) == b"a\nb\nb\nc\n"


def _relayed_reads(reads: list[bytes], collapse_pairs: bool = False) -> bytes:
    """`reads` handed to a LineRelay one read at a time, then EOF; what it wrote."""

    async def scenario() -> bytes:
        out_read, out_write = os.pipe()
        fcntl.fcntl(out_write, fcntl.F_SETPIPE_SZ, 1 << 20)
        sink = OutputSink(out_write, "stderr", limit_bytes=4 << 20)
        relay = LineRelay(sink, collapse_pairs=collapse_pairs)
        for data in reads:
            relay.data_received(data)
        relay.connection_lost(None)
        data = _collected(out_read, out_write, sink)
        return data

    return asyncio.run(scenario())


def test_a_repeated_line_in_a_later_read_is_another_event_and_kept() -> None:
    """Squid's stderr copy follows its cache.log line at once (one read); the same line read
    again later is a new event (a repeated warning) and is never dropped."""
    assert _relayed_reads([b"WARNING: x\n", b"WARNING: x\n"], True) == b"WARNING: x\n" * 2
    assert _relayed_reads([b"a\n", b"a\na\n", b"a"], True) == b"a\na\na\n"


@settings(max_examples=25, deadline=None)
@given(
    st.integers(-3, 3).map(lambda delta: log_relay.MAX_HELD_BYTES + delta),
    st.lists(st.integers(0, log_relay.MAX_HELD_BYTES + 3), max_size=3),
)
def test_a_complete_line_over_the_held_limit_is_dropped_however_it_arrives(
    size: int, cuts: list[int]
) -> None:
    """Over MAX_HELD_BYTES a line is dropped with its note whether its end arrives in the
    read that crossed the limit or a later one; at the limit it is relayed whole."""
    data = b"k" * size + b"\nafter\n"
    bounds = sorted({0, *(min(cut, len(data)) for cut in cuts), len(data)})
    reads = [data[start:end] for start, end in itertools.pairwise(bounds) if end > start]
    output = _relayed_reads(reads)
    if size > log_relay.MAX_HELD_BYTES:
        assert (
            output
            == (
                f"[a line of {size} bytes dropped: longer than {log_relay.MAX_HELD_BYTES}]\nafter\n"
            ).encode()
        )
    else:
        assert output.endswith(b"\nafter\n") and b"dropped" not in output
        assert output.replace(b"\n", b"")[:-5] == b"k" * size


def test_lines_that_arrive_together_leave_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """50 access-log lines in one read from the child: one write() to our stdout, not 50."""
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(fd)
        return real_write(fd, data)

    async def scenario() -> bytes:
        out_read, out_write = os.pipe()
        sink = OutputSink(out_write, "stdout")
        relay = LineRelay(sink)
        monkeypatch.setattr(output_sink.os, "write", counting_write)
        relay.data_received(
            b"1733550000.123 1 127.0.0.1 TCP_MISS/200 425 GET http://h/o - HIER_DIRECT/h -\n" * 50
        )
        monkeypatch.undo()
        data = _collected(out_read, out_write, sink)
        return data

    data = asyncio.run(scenario())
    assert data.count(b"\n") == 50 and len(set(data.splitlines())) == 1
    assert len(writes) == 1, f"{len(writes)} writes for 50 lines"


def _full_sink(limit: int) -> tuple[OutputSink, int, int]:
    """A sink whose pipe is full and never read: every line stays queued or is dropped."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETFL, os.O_NONBLOCK)
    try:
        while True:
            os.write(write_end, b"\0" * 4096)
    except BlockingIOError:
        pass
    return OutputSink(write_end, "stdout", limit_bytes=limit), read_end, write_end


@settings(max_examples=50)
@given(st.lists(st.integers(1, 300), max_size=40), st.integers(0, 2000), st.integers(0, 5))
def test_a_batch_queues_and_drops_each_line_as_one_by_one_would(
    sizes: list[int], limit: int, split: int
) -> None:
    """The slow-reader protection is per line whether lines come one by one or as a batch."""
    lines = [b"x" * (size - 1) + b"\n" for size in sizes]
    one, batch, block = _full_sink(limit), _full_sink(limit), _full_sink(limit)
    try:
        for line in lines:
            one[0].write_line(line)
        batch[0].write_lines(lines[:split])
        batch[0].write_lines(lines[split:])
        block[0].write_block(b"".join(lines[:split]))  # the relay's joined block, no per-line work
        block[0].write_block(b"".join(lines[split:]))
        for sink in (batch[0], block[0]):
            assert (sink.pending_bytes, sink.dropped) == (one[0].pending_bytes, one[0].dropped)
            assert b"".join(sink._queue) == b"".join(one[0]._queue)
    finally:
        for sink, read_end, write_end in (one, batch, block):
            for fd in (read_end, write_end, sink.fd):
                os.close(fd)


def test_the_relay_rests_after_a_small_read_and_never_after_a_large_one() -> None:
    """Lines written one by one while it rests come as one batch; fast output is read at once;
    the pipe is enlarged so a child cannot fill it during a rest."""

    async def scenario() -> tuple[bool, bool, bool, int]:
        loop = asyncio.get_running_loop()
        null = os.open(os.devnull, os.O_WRONLY)
        sink = OutputSink(null, "stdout")
        read_end, write_end = os.pipe()
        relay = LineRelay(sink)
        transport, _ = await loop.connect_read_pipe(lambda: relay, os.fdopen(read_end, "rb", 0))
        size = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
        relay.data_received(b"one line\n")
        rests = not transport.is_reading()
        deadline = time.monotonic() + WRITE_BOUND
        while not transport.is_reading() and time.monotonic() < deadline:
            await asyncio.sleep(log_relay.BATCH_WAIT / 4)
        resumed = transport.is_reading()
        relay.data_received(b"x" * (log_relay.BATCH_READ_BYTES - 1) + b"\n")
        follows_fast_output = transport.is_reading()
        transport.close()
        os.close(write_end)
        os.close(null)
        os.close(sink.fd)
        return rests, resumed, follows_fast_output, size

    rests, resumed, follows_fast_output, size = asyncio.run(scenario())
    assert rests, "no rest after a small read: one wakeup per line"
    assert resumed, f"still resting {WRITE_BOUND} s later"
    assert follows_fast_output, "rested after a large read: a fast writer could fill the pipe"
    assert size >= log_relay.PIPE_BYTES


def _relayed(data: bytes, render: log_relay.LineRender) -> bytes:
    """`data` written by a "child" into a real pipe (a long line arrives in several reads),
    relayed by LineRelay with `render`; what reached our side's pipe."""

    async def scenario() -> bytes:
        out_read, out_write = os.pipe()
        fcntl.fcntl(out_write, fcntl.F_SETPIPE_SZ, 1 << 20)
        sink = OutputSink(out_write, "stdout", limit_bytes=4 << 20)
        sink.attach(asyncio.get_running_loop())
        child_read, child_write = os.pipe()
        relay = LineRelay(sink, render=render)
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: relay, os.fdopen(child_read, "rb", 0)
        )
        view = memoryview(data)
        while view:  # the relay reads between the writes: it sees the line's head alone first
            written = await asyncio.to_thread(os.write, child_write, view[: 48 * 1024])
            view = view[written:]
            await asyncio.sleep(0.03)
        os.close(child_write)
        await asyncio.wait_for(relay.closed, WRITE_BOUND)
        sink.attach(None)
        output = _collected(out_read, out_write, sink)
        return output

    return asyncio.run(scenario())


_SECRET = "Remembered-Secret-1234"


@contextlib.contextmanager
def _remembered_secret() -> Iterator[None]:
    redact.forget_secrets()
    redact.remember_for(
        "test", redact.secrets_in(f"cache_peer p parent 3128 0 login=alice:{_SECRET}")
    )
    try:
        yield
    finally:
        redact.forget_secrets()


@settings(max_examples=12, deadline=None)
@given(
    offset=st.integers(-30, 10),
    kind=st.sampled_from(["remembered", "authorization", "password"]),
    json_format=st.booleans(),
)
def test_a_secret_across_the_piece_boundary_of_a_long_line_never_leaks(
    offset: int, kind: str, json_format: bool
) -> None:
    """A line over 64 KiB was cut into raw pieces before redaction: a secret straddling the cut
    passed as two harmless halves (its tail, or both halves of a remembered value). Redaction
    now sees the whole line; only its result is cut into pieces."""
    start = log_relay.MAX_LINE_BYTES + offset  # where the secret starts, near the cut
    if kind == "remembered":
        head, secret = "x" * start, _SECRET
    elif kind == "authorization":
        head, secret = "Proxy-Authorization: Negotiate " + "A" * (start - 31), "TOKEN-TAIL-9876"
    else:
        head, secret = "y" * (start - 9) + "password=", "hunter2-top-secret"
    line = (
        head + secret + " tail " + "z" * 40_000 + "\nnext line\n"
    ).encode()  # its head (96 KiB) arrives alone
    render = log_json.render_cache_log if json_format else log_relay.safe_line
    with _remembered_secret():
        output = _relayed(line, render).decode("utf-8")
    lines = output.splitlines()
    assert lines[-1].endswith("next line" + ('"}' if json_format else "")), lines[-1][-80:]
    pieces = [secret[:cut] for cut in range(6, len(secret) - 5)] + [
        secret[cut:] for cut in range(5, len(secret) - 5)
    ]
    joined = "".join(lines)  # a secret in two output lines is still a secret
    assert not [piece for piece in pieces if piece in joined], [text[-80:] for text in lines]
    if json_format:
        assert all(json.loads(text) for text in lines)


def test_a_line_too_long_to_hold_is_dropped_and_said_so() -> None:
    """Over MAX_HELD_BYTES a line cannot be redacted whole: dropped (never passed unredacted),
    one line says so, and the next line is relayed as usual."""
    size = log_relay.MAX_HELD_BYTES + 100_000
    line = ("a" * (size - 200) + _SECRET + "b" * 178).encode() + b"\nafter\n"
    with _remembered_secret():
        output = _relayed(line, log_relay.safe_line).decode()
    assert (
        output
        == f"[a line of {size} bytes dropped: longer than {log_relay.MAX_HELD_BYTES}]\nafter\n"
    )
