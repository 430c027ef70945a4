"""LOG_FORMAT=json: PID 1's records and every relayed line as one JSON object per line.

Every string that goes into an object passed log_text first (redacted, control characters
escaped), so a decoded value is as safe as a text-format line; json.dumps then escapes what
JSON needs. Whatever bytes a child writes, a line becomes exactly one parseable object no
longer than its limit: a value that does not fit is cut, saying how much. Each object has
`time` (RFC 3339, UTC), `level` and `source` (entrypoint, squid-cache, squid-access,
health-server); records have `message` and, where they exist, structured fields (pid,
exit_code, signal, path, port, ...). A JSON object Squid writes (the packaged JSON access
logformat) is re-emitted field by field, each value sanitised the same way.
"""

from __future__ import annotations

import json
import math
import re
import signal
import time
from collections.abc import Callable, Iterator

from entrypoint.log_text import escape_controls, safe_line, safe_record
from entrypoint.redact import might_redact

RELAYED_LIMIT = 64 * 1024  # characters of one relayed line as JSON (a text relay's piece size)

# Record attributes (logging's `extra=`) written as fields of their own when a record has them.
STRUCTURED_FIELDS = ("pid", "exit_code", "signal", "path", "port", "kid", "restart", "reason")

_SQUID_LEVELS = {"FATAL": "CRITICAL", "ERROR": "ERROR", "BUG": "ERROR", "WARNING": "WARNING"}
# Squid 7's cache.log: `2026/12/07 03:40:01 kid1| ERROR: ...` (no kid before the kids start).
_SQUID_LINE = re.compile(
    r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: kid(?P<kid>\d{1,6}))?\| ?(?P<message>.*)", re.S
)
_SQUID_PREFIX = re.compile(r"(?P<level>FATAL|ERROR|BUG|WARNING)\b")
# The health server writes text records (logs.py's text format); the relay keeps level and message.
_TEXT_RECORD = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[(?P<level>[A-Z]{4,8})\] (?P<message>.*)", re.S
)


_second: tuple[int, str] = (-1, "")  # the last second formatted (strftime is most of a line's cost)


def rfc3339(timestamp: float) -> str:
    """`2026-12-07T03:40:01.123Z`: UTC, milliseconds."""
    global _second
    seconds, cached = int(timestamp), _second  # read once: another thread may replace it
    if cached[0] != seconds:
        cached = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    millis = min(int((timestamp - seconds) * 1000), 999)
    return f"{cached[1]}.{millis:03d}Z"


def signal_label(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def exit_fields(returncode: int) -> dict[str, object]:
    """A Popen return code as fields: `exit_code` or `signal` (by name)."""
    return {"signal": signal_label(-returncode)} if returncode < 0 else {"exit_code": returncode}


def _dumps(fields: dict[str, object]) -> str:
    return json.dumps(
        fields, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str
    )


def _cut(value: str, keep: int) -> str:
    return f"{value[:keep]} ... [{len(value) - keep} more characters cut]"


def fit(fields: dict[str, object], limit: int) -> str:
    """`fields` as one JSON line of at most `limit` characters: the longest string values are cut.

    Every string is printable after log_text, so JSON at most doubles one (a quote, a backslash,
    a TAB): cutting the excess plus the note's length from the longest value always fits it.
    """
    line = _dumps(fields)
    for _ in range(len(fields)):
        if len(line) <= limit:
            return line
        strings = [
            key for key, value in fields.items() if isinstance(value, str) and len(value) > 40
        ]
        if not strings:
            break
        key = max(strings, key=lambda name: len(str(fields[name])))
        value = str(fields[key])
        note = len(_cut(value, 0))  # the " ... [N more characters cut]" note itself
        fields[key] = _cut(value, max(0, len(value) - (len(line) - limit) - note))
        line = _dumps(fields)
    if len(line) <= limit:
        return line
    # Not cuttable (many short values, nested ones): the essentials, and say so.
    return _dumps(
        {key: fields[key] for key in ("time", "level", "source") if key in fields}
        | {"message": f"[record of {len(line)} characters dropped: longer than {limit}]"}
    )


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _clean(value: object, safe: Callable[[str], str]) -> object:
    """A value parsed from a child's JSON, every string in it (keys too) through `safe`."""
    if isinstance(value, str):
        return safe(value)
    if isinstance(value, dict):
        return {safe(str(key)): _clean(item, safe) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item, safe) for item in value]
    if isinstance(value, float) and not math.isfinite(value):  # 1e999 parses as inf: no JSON
        return str(value)
    return value  # int, finite float, bool, None (NaN and Infinity are parsed as strings)


def _parsed_object(line: str) -> dict[str, object] | None:
    """`line` as a JSON object, or None. strict=False: Squid's `"` encoding leaves control bytes raw."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line, strict=False, parse_constant=str)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _wrapped(source: str, level: str, message: str, extra: dict[str, object] | None = None) -> str:
    fields: dict[str, object] = {"time": rfc3339(time.time()), "level": level, "source": source}
    fields.update(extra or {})
    fields["message"] = safe_line(message)
    return fit(fields, RELAYED_LIMIT)


def _total(render: Callable[[str], str], source: str) -> Callable[[str], str]:
    """`render` that never raises (a relay must go on): a failure gives a fixed object."""

    def safe(line: str) -> str:
        try:
            return render(line)
        except Exception:  # never the line itself: it may be what broke the rendering
            return _dumps(
                {
                    "time": rfc3339(time.time()),
                    "level": "ERROR",
                    "source": source,
                    "message": "[line dropped: JSON log rendering failed]",
                }
            )

    return safe


def _access(line: str) -> str:
    """Squid's stdout (the access log): a JSON object is kept field by field, other text wrapped."""
    parsed = _parsed_object(line)
    if parsed is None:
        return _wrapped("squid-access", "INFO", line)
    fields: dict[str, object] = {
        "time": rfc3339(time.time()),
        "level": "INFO",
        "source": "squid-access",
    }
    # Redacting each value costs a redact() per value: when none can need it (one check of all
    # of them), escaping alone gives the same strings.
    safe = safe_line if might_redact("\n".join(_strings(parsed))) else escape_controls
    cleaned = _clean(parsed, safe)
    assert isinstance(cleaned, dict)
    for key, value in cleaned.items():  # ours stay what every line promises; theirs are kept aside
        fields[f"squid_{key}" if key in ("time", "level", "source") else key] = value
    return fit(fields, RELAYED_LIMIT)


def _cache_log(line: str) -> str:
    """Squid's stderr (cache.log): Squid's level and kid number when the line says them."""
    match = _SQUID_LINE.fullmatch(line)
    if match is None:
        return _wrapped("squid-cache", "INFO", line)
    message = match.group("message")
    extra: dict[str, object] = {}
    if match.group("kid"):
        extra["kid"] = int(match.group("kid"))
    prefix = _SQUID_PREFIX.match(message)
    level = _SQUID_LEVELS[prefix.group("level")] if prefix else "INFO"
    return _wrapped("squid-cache", level, message, extra)


def _health(line: str) -> str:
    """The health server's text records: their level and message, our time."""
    match = _TEXT_RECORD.fullmatch(line)
    if match is None or match.group("level") not in (
        "DEBUG",
        "INFO",
        "WARNING",
        "ERROR",
        "CRITICAL",
    ):
        return _wrapped("health-server", "INFO", line)
    return _wrapped("health-server", match.group("level"), match.group("message"))


render_access = _total(_access, "squid-access")
render_cache_log = _total(_cache_log, "squid-cache")
render_health = _total(_health, "health-server")


def record_fields(created: float, level: str, message: str) -> dict[str, object]:
    """The first fields of one of PID 1's records (the caller adds structured ones)."""
    return {
        "time": rfc3339(created),
        "level": level,
        "source": "entrypoint",
        "message": safe_record(message),
    }


def notice_line(message: str) -> str:
    """An output sink's own notice (dropped lines) as a JSON record."""
    return _dumps(record_fields(time.time(), "WARNING", message))
