"""No raw control character reaches a log: PID 1's records and relayed lines, through the real parts."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from typing import Iterator

import pytest
from hypothesis import given, strategies as st

from entrypoint.log_relay import LineRelay
from entrypoint.log_text import escape_controls
from entrypoint.logs import configure_logging
from entrypoint.output_sink import OutputSink

# Any string Python may hold, lone surrogates included (os.environ and paths carry undecodable
# bytes as U+DC80..U+DCFF).
_ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=300)
_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)


def _is_clean(line: str) -> bool:
    return all(char == "\t" or char.isprintable() for char in line)


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class _Pipes:
    """Two pipes behind two OutputSinks (stdout, stderr), read back without blocking."""

    def __init__(self) -> None:
        self.ends = [os.pipe() for _ in range(2)]
        for read_end, _ in self.ends:
            os.set_blocking(read_end, False)
        self.sinks = (OutputSink(self.ends[0][1], "stdout"), OutputSink(self.ends[1][1], "stderr"))

    def read(self) -> tuple[bytes, bytes]:
        out, err = (_read_all(read_end) for read_end, _ in self.ends)
        return out, err

    def close(self) -> None:
        for sink in self.sinks:
            os.close(sink.fd)
        for pair in self.ends:
            for fd in pair:
                os.close(fd)


@pytest.fixture(scope="module")
def pipes() -> Iterator[_Pipes]:
    """Pipes for the records; the root logger is restored afterwards."""
    created = _Pipes()
    root = logging.getLogger()
    saved = (
        list(root.handlers),
        root.level,
        logging.getLogger("asyncio").level,
        sys.excepthook,
        threading.excepthook,
    )
    logging.getLogger("asyncio").setLevel(
        logging.WARNING
    )  # its DEBUG line per new loop is not ours
    try:
        yield created
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.getLogger("asyncio").setLevel(saved[2])
        sys.excepthook, threading.excepthook = saved[3], saved[4]  # configure_logging sets them
        created.close()


@pytest.fixture(scope="module")
def relay_pipes(pipes: _Pipes) -> Iterator[_Pipes]:
    created = _Pipes()
    try:
        yield created
    finally:
        created.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        ("a\r\nforged", "a\\r\\nforged"),
        (
            "nel\x85 ls\u2028 ps\u2029 del\x7f bidi\u202e",
            "nel\\u0085 ls\\u2028 ps\\u2029 del\\x7f bidi\\u202e",
        ),
        (b"bad \xff\xc3 byte".decode("utf-8", "surrogateescape"), "bad \\xff\\xc3 byte"),
        ("tab\tand ünïcödé stay", "tab\tand ünïcödé stay"),
    ],
)
def test_escape_controls(text: str, expected: str) -> None:
    assert escape_controls(text) == expected


@given(message=_ANY_TEXT, level=st.sampled_from(_LEVELS), traceback=st.booleans())
def test_every_record_is_one_clean_line(
    pipes: _Pipes, message: str, level: int, traceback: bool
) -> None:
    """configure_logging + OutputSink into a pipe: a record is one line, whatever it holds."""
    log = configure_logging("DEBUG", pipes.sinks)
    if traceback:
        try:
            raise ValueError(message)
        except ValueError:
            log.log(level, "failed on %s", message, exc_info=True)
    else:
        log.log(level, "value %s and %r", message, message)
    out, err = pipes.read()
    written = err if level >= logging.ERROR else out
    assert (out if level >= logging.ERROR else err) == b""
    lines = written.decode("utf-8").split("\n")  # strict: valid UTF-8 only
    assert len(lines) == 2 and lines[1] == "", written  # one line, newline-terminated
    assert _is_clean(lines[0]), lines[0]


async def _relay(chunks: list[bytes], sink: OutputSink) -> None:
    relay = LineRelay(sink)
    for chunk in chunks:
        relay.data_received(chunk)
    relay.connection_lost(None)


@given(chunks=st.lists(st.binary(max_size=400), max_size=8))
def test_every_relayed_line_is_one_clean_line(relay_pipes: _Pipes, chunks: list[bytes]) -> None:
    """LineRelay: what a child writes comes out line for line, each clean, whatever the bytes."""
    asyncio.run(_relay(chunks, relay_pipes.sinks[0]))
    out, _ = relay_pipes.read()
    data = b"".join(chunks)
    expected_lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    lines = out.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == expected_lines, (data, out)
    assert all(_is_clean(line) for line in lines), out


def test_an_uncaught_exception_is_one_clean_line_too() -> None:
    """Python's own traceback printer would write the value raw, over several lines."""
    import subprocess

    code = (
        "import threading\n"
        "from entrypoint.logs import configure_logging\n"
        "configure_logging('INFO')\n"
        "def fail(): raise ValueError('\\x1b[2J\\u2028in a thread\\nforged')\n"
        "thread = threading.Thread(target=fail); thread.start(); thread.join()\n"
        "raise ValueError('\\x1b[2J\\rkept\\nforged login=u:S3CR')\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, cwd=repo)
    assert result.returncode == 1 and result.stdout == b""
    lines = result.stderr.decode("utf-8").splitlines()
    assert len(lines) == 2, result.stderr
    assert all(_is_clean(line) and "[CRITICAL] Uncaught exception" in line for line in lines), lines
    assert "S3CR" not in lines[1] and "\\x1b[2J\\rkept\\nforged" in lines[1], lines


def test_a_huge_record_is_cut_not_dropped(pipes: _Pipes) -> None:
    """A record over the sink's 256 KiB queue was dropped whole (an error quoting a 1 MiB config
    line vanished, exit 1 with no [ERROR] line): it is cut, saying how much."""
    log = configure_logging("INFO", pipes.sinks)
    log.error("Squid config rejected: %s", "\x01" * (300 * 1024))  # escaped: 4x as long
    out, err = pipes.read()
    assert out == b""
    line = err.decode("utf-8").rstrip("\n")
    assert "\n" not in line and "[ERROR] Squid config rejected: \\x01\\x01" in line, line[:200]
    assert line.endswith(" more characters cut]"), line[-200:]
    assert len(line) < 64 * 1024
