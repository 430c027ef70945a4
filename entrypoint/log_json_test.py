"""LOG_FORMAT=json: whatever a record or a child's line holds, one parseable, safe, bounded JSON line."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from entrypoint import log_json
from entrypoint.log_relay import LineRelay
from entrypoint.log_text import safe_line
from entrypoint.log_text_test import _ANY_TEXT, _Pipes
from entrypoint.logs import RECORD_LIMIT, configure_logging
from entrypoint.output_sink import OutputSink
from entrypoint.redact import forget_secrets, remember_for, secrets_in
from entrypoint.redact_test import secret_lines
from entrypoint.settings import load_settings, log_format_problem
from entrypoint.squid_config import render_default

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
RENDERS = {
    "squid-access": log_json.render_access,
    "squid-cache": log_json.render_cache_log,
    "health-server": log_json.render_health,
}
# What a child may write: any bytes, decoded as the relay decodes them.
child_lines = st.binary(max_size=300).map(
    lambda raw: raw.replace(b"\n", b"").decode("utf-8", "surrogateescape")
)


def _strings(value: object) -> list[str]:
    return list(log_json._strings(value))


def parsed_line(line: str, limit: int = log_json.RELAYED_LIMIT) -> dict[str, object]:
    """`line` as the contract says: one line, no raw control character, a JSON object with the fields."""
    assert "\n" not in line and line.isprintable(), repr(line)
    assert len(line) <= limit, len(line)
    fields = json.loads(line)
    assert isinstance(fields, dict), line
    assert RFC3339_UTC.fullmatch(str(fields["time"])), line
    assert fields["level"] in LEVELS, line
    assert isinstance(fields["source"], str), line
    for text in _strings(fields):  # decoded, every value is as safe as a text line (TAB kept)
        assert text.replace("\t", " ").isprintable(), repr(text)
    return fields


class _Lines(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def json_records() -> Iterator[_Lines]:
    """The root logger configured for JSON, its formatted lines collected; restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, sys.excepthook, threading.excepthook)
    configure_logging("DEBUG", log_format="json")
    formatter = root.handlers[0].formatter
    assert formatter is not None, "configure_logging left its handler without a formatter"
    collector = _Lines(formatter)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(collector)
    try:
        yield collector
    finally:
        root.removeHandler(collector)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        sys.excepthook, threading.excepthook = saved[2], saved[3]  # configure_logging sets them


@given(
    message=_ANY_TEXT,
    argument=_ANY_TEXT | st.binary(max_size=100),
    level=st.sampled_from(
        [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
    ),
)
def test_any_record_is_one_parseable_line(
    json_records: _Lines, message: str, argument: object, level: int
) -> None:
    json_records.lines.clear()
    logging.getLogger("cephaloproxy").log(
        level, "%s: %s", message, argument, extra={"path": argument, "pid": 7}
    )
    (line,) = json_records.lines
    fields = parsed_line(line, RECORD_LIMIT)
    assert fields["source"] == "entrypoint" and fields["pid"] == 7 and "path" in fields


@given(child_lines, st.sampled_from(sorted(RENDERS)))
@example(
    '{"time":"yesterday","level":"LOUD","source":"me","n":1e999,"m":NaN,"d":[{"x":"\x1b"}]}',
    "squid-access",
)
def test_any_child_line_is_one_parseable_line(line: str, source: str) -> None:
    fields = parsed_line(RENDERS[source](line))
    assert fields["source"] == source
    if line.startswith('{"time":"yesterday"'):  # a child's own time/level/source are kept aside
        assert (fields["squid_time"], fields["n"], fields["m"], fields["d"]) == (
            "yesterday",
            "inf",
            "NaN",
            [{"x": "\\x1b"}],
        )


@given(
    st.dictionaries(
        st.text(max_size=20),
        st.text(max_size=40) | st.integers() | st.floats() | st.none(),
        max_size=6,
    ),
    st.text(alphabet='\x00\x01\x1b\x7f\x85\u2028"\\', max_size=5),
)
def test_squid_json_with_raw_control_characters_is_kept_field_by_field(
    fields: dict[str, object], raw: str
) -> None:
    """Squid's %"x encoding leaves control bytes raw: the object is still kept, values escaped."""
    line = (
        json.dumps(fields | {"raw": raw}, allow_nan=True)
        .replace("\\u001b", "\x1b")
        .replace("\\u0001", "\x01")
    )
    parsed = parsed_line(log_json.render_access(line))
    assert {safe_line(key) for key in fields} <= set(parsed), (
        line,
        parsed,
    )  # keys escaped as values are


@given(secret_lines(), st.sampled_from(["record", "exception", *sorted(RENDERS), "access-value"]))
def test_no_generated_secret_survives_the_json_formatter(
    json_records: _Lines, case: tuple[str, list[str]], where: str
) -> None:
    line, pieces = case
    json_records.lines.clear()
    if where == "record":
        logging.getLogger("cephaloproxy").warning("Processing: %s", line)
        output = json_records.lines[0]
    elif where == "exception":
        try:
            raise ValueError(line)
        except ValueError:
            logging.getLogger("cephaloproxy").exception("failed")
        output = json_records.lines[0]
    elif where == "access-value":
        output = log_json.render_access(json.dumps({"url": line, "note": line}))
    else:
        output = RENDERS[where](f"2026/12/07 03:40:01 kid1| Processing: {line}")
    decoded = " ".join(_strings(json.loads(output)))
    leaked = [piece for piece in pieces if piece in output or piece in decoded]
    assert not leaked, f"{leaked} leaked from {line!r}: {output}"


def test_a_long_record_is_cut_at_the_limit_and_stays_json(json_records: _Lines) -> None:
    json_records.lines.clear()
    logging.getLogger("cephaloproxy").info(
        "%s", '"\\\t' * RECORD_LIMIT
    )  # every character escaped: twice as long
    (line,) = json_records.lines
    fields = parsed_line(line, RECORD_LIMIT)
    assert re.search(r"\.\.\. \[\d+ more characters cut\]$", str(fields["message"])), line[-80:]
    long_child = log_json.render_cache_log("x" * (log_json.RELAYED_LIMIT * 2))
    assert str(parsed_line(long_child)["message"]).endswith("more characters cut]")


def test_squid_cache_log_level_and_kid_are_fields() -> None:
    error = parsed_line(
        log_json.render_cache_log("2026/12/07 03:40:01 kid1| ERROR: no running copy")
    )
    assert (error["level"], error["kid"], error["message"]) == (
        "ERROR",
        1,
        "ERROR: no running copy",
    )
    assert (
        parsed_line(log_json.render_cache_log("2026/12/07 03:40:01| FATAL: Bungled"))["level"]
        == "CRITICAL"
    )
    other = parsed_line(log_json.render_cache_log("    current master transaction: master53"))
    assert (other["level"], other["source"]) == ("INFO", "squid-cache")


def test_health_server_text_records_keep_their_level() -> None:
    fields = parsed_line(
        log_json.render_health("2026-12-07 03:40:01 [ERROR] Health server cannot listen")
    )
    assert (fields["level"], fields["message"], fields["source"]) == (
        "ERROR",
        "Health server cannot listen",
        "health-server",
    )


async def _relay(sink: OutputSink, chunk: bytes) -> None:
    relay = LineRelay(sink, render=log_json.render_cache_log)
    relay.data_received(chunk)
    relay.connection_lost(None)


def test_relay_and_sink_notice_write_json() -> None:
    """A relayed line and the sink's own `dropped N lines` notice are JSON lines too."""
    pipes = _Pipes()
    try:
        sink = pipes.sinks[0]
        sink.render_notice = log_json.notice_line
        asyncio.run(_relay(sink, b"2026/12/07 03:40:01 kid1| WARNING: \x1b[2J\xff\n"))
        sink.dropped = 3
        sink.write_line(b"")  # written at once; the reader caught up, so the notice follows
        lines = pipes.read()[0].decode("utf-8").splitlines()
    finally:
        pipes.close()
    assert parsed_line(lines[0])["level"] == "WARNING"
    assert parsed_line(lines[-1])["message"] == "dropped 3 log lines (stdout reader stalled)", lines


@given(st.text(max_size=20))
def test_log_format_accepts_text_and_json_and_refuses_anything_else(value: str) -> None:
    problem = log_format_problem({"LOG_FORMAT": value})
    valid = value.strip().lower() in ("", "text", "json")
    assert (problem is None) == valid, (value, problem)
    if problem is not None:
        assert "LOG_FORMAT" in problem and "text, json" in problem
    else:
        assert load_settings({"LOG_FORMAT": value})[0].log_format == (
            value.strip().lower() or "text"
        )


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_packaged_default_switches_its_access_log_only_for_json(
    tmp_path: Path, log_format: str
) -> None:
    """The rendered default names the JSON logformat on the stdout access_log, ACLs after it kept."""
    packaged = (Path(__file__).parent / "squid.conf.default").read_text()
    default = tmp_path / "squid.conf.default"
    default.write_text(packaged + "access_log stdio:/dev/stdout !manager all\naccess_log none\n")
    settings, _ = load_settings(
        {"CEPHALOPROXY_DEFAULT_CONFIG": str(default), "LOG_FORMAT": log_format}
    )
    rendered = [
        line for line in render_default(settings).splitlines() if line.startswith("access_log")
    ]
    switched = " logformat=cephaloproxy_json" if log_format == "json" else ""
    assert rendered == [
        # The packaged line (the metrics scrapes kept out by !manager), then the added one.
        f"access_log stdio:/dev/stdout{switched} !manager",
        f"access_log stdio:/dev/stdout{switched} !manager all",
        "access_log none",
    ], rendered
    assert "logformat cephaloproxy_json {" in packaged


@given(
    st.dictionaries(_ANY_TEXT, _ANY_TEXT, max_size=5),
    secret_lines(),
    st.booleans(),
    st.sampled_from(["nothing", "a piece", "the line"]),
)
def test_access_values_are_exactly_what_a_text_line_would_get(
    fields: dict[str, str], case: tuple[str, list[str]], remembered: bool, carried: str
) -> None:
    """One check for a whole access line (might_redact) gives each value what safe_line gives it,
    with and without remembered secrets, and a secret among the values never survives."""
    config_line, pieces = case
    if remembered:
        remember_for("test", secrets_in(config_line))
    try:
        values = (
            fields
            | {
                "nothing": {},
                "a piece": {"piece": f"a {pieces[0]} b"},
                "the line": {"line": config_line},
            }[carried]
        )
        out = parsed_line(log_json.render_access(json.dumps(values)))
        for key, value in values.items():
            name = safe_line(key)
            if name not in ("time", "level", "source"):
                assert out[name] == safe_line(value), (key, value, out)
        if remembered or carried == "the line":
            assert not [p for p in pieces if p in json.dumps(out, ensure_ascii=False)], out
    finally:
        forget_secrets()


@given(
    st.floats(min_value=0, max_value=4102444800, allow_nan=False),
    st.floats(min_value=0, max_value=4102444800, allow_nan=False),
)
def test_rfc3339_is_utc_with_milliseconds(first: float, second: float) -> None:
    """The cached second never leaks into another second's stamp."""
    for stamp in (first, second, first):
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(stamp)))
        assert log_json.rfc3339(stamp).startswith(expected + ".") and RFC3339_UTC.fullmatch(
            log_json.rfc3339(stamp)
        )
