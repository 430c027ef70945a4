"""Parse the entrypoint's `YYYY-MM-DD HH:MM:SS [LEVEL] message` lines and check their order.

Squid's own output (access log, cache.log) is interleaved in the container's streams;
only lines in the entrypoint's format are considered structured, the rest is kept raw
for "does this text appear anywhere" checks.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Iterable, Sequence

LOG_LINE = re.compile(
    r"^(?P<stamp>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) \[(?P<level>DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\] "
    r"(?P<message>.*)$"
)

Pattern = str | re.Pattern[str]


@dataclasses.dataclass(frozen=True)
class LogLine:
    timestamp: datetime.datetime
    level: str
    message: str
    index: int  # position among the parsed lines, to report where a match was found


def parse_log_lines(text: str) -> list[LogLine]:
    """Every line in the entrypoint format, in order; other lines are skipped."""
    parsed: list[LogLine] = []
    for raw in text.splitlines():
        match = LOG_LINE.match(raw.rstrip("\r"))
        if match is None:
            continue
        try:
            stamp = datetime.datetime.strptime(match.group("stamp"), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue  # looks like a log line but is not a real date: not ours
        parsed.append(LogLine(stamp, match.group("level"), match.group("message"), len(parsed)))
    return parsed


def _compile(pattern: Pattern) -> re.Pattern[str]:
    return pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))


@dataclasses.dataclass(frozen=True)
class OrderCheck:
    """Outcome of matching patterns in sequence; `missing` is the first pattern not found."""

    matched: tuple[LogLine, ...]
    missing: str | None

    @property
    def ok(self) -> bool:
        return self.missing is None


def find_in_order(lines: Sequence[LogLine], patterns: Iterable[Pattern]) -> OrderCheck:
    """Match each pattern (substring or regex, searched in the message) after the previous match."""
    matched: list[LogLine] = []
    position = 0
    for pattern in patterns:
        regex = _compile(pattern)
        found = next((line for line in lines[position:] if regex.search(line.message)), None)
        if found is None:
            return OrderCheck(
                tuple(matched), pattern if isinstance(pattern, str) else pattern.pattern
            )
        matched.append(found)
        position = found.index + 1
    return OrderCheck(tuple(matched), None)


def assert_in_order(text: str, patterns: Sequence[Pattern]) -> list[LogLine]:
    """Assert the patterns appear in order among the entrypoint lines of `text`."""
    lines = parse_log_lines(text)
    check = find_in_order(lines, patterns)
    if not check.ok:
        seen = (
            "\n".join(f"  {line.level}: {line.message}" for line in lines)
            or "  (no entrypoint-format lines)"
        )
        after = f" after {check.matched[-1].message!r}" if check.matched else ""
        raise AssertionError(
            f"log line matching {check.missing!r} not found{after}; entrypoint lines were:\n{seen}"
        )
    return list(check.matched)


def messages_at(text: str, levels: Iterable[str]) -> list[str]:
    wanted = {level.upper() for level in levels}
    return [line.message for line in parse_log_lines(text) if line.level in wanted]


SQUID_PID = re.compile(r"Squid started with PID (?P<pid>\d+)")


def squid_pid(text: str) -> int | None:
    """The PID from the last `Squid started with PID <pid>` line."""
    pids = [int(match.group("pid")) for match in SQUID_PID.finditer(text)]
    return pids[-1] if pids else None
