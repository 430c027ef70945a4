"""Parsers of Squid 7.7's cache manager reports (`counters`, `info`, `service_times`) into named numbers.

Each parser takes the report body as text and returns {key: value} for the lines it recognises;
any other line (garbage, a newer Squid's additions) is skipped, never an error. Values are finite
floats only. Under SMP (`workers N`) Squid 7.7 prints these three reports already summed over
the kids (checked against 7.7 with `workers 2`); a `by kidN {` ... `} by kidN` section, which
other reports use, is skipped so a kid's share is never added to the total twice.
"""

from __future__ import annotations

import functools
import math
import re

MAX_LINES = 5000  # the three reports are ~60, ~60 and ~140 lines
MAX_LINE = 400  # longer lines are no line of these reports (and would cost the regexes time)

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_COUNTER_KEY = re.compile(r"[A-Za-z0-9_.]{1,80}")
_KID_OPEN = re.compile(r"\s*by kid\d+ \{\s*\Z")
_KID_CLOSE = re.compile(r"\s*\} by kid\d+\s*\Z")
_SERVICE_TIME = re.compile(
    r"\s*([A-Za-z][A-Za-z ()-]*?):\s+(\d{1,3})%\s+("
    + _NUMBER.pattern
    + r")\s+("
    + _NUMBER.pattern
    + r")\s*\Z"
)
_HIT_RATIOS = re.compile(r"5min: (" + _NUMBER.pattern + r")%, 60min: (" + _NUMBER.pattern + r")%")
_STRUCTURE = re.compile(r"\s*(\d+) ([A-Za-z][A-Za-z -]*?)\s*\Z")


def _number(text: str) -> float | None:
    """The first number in `text` when it is finite and not absurdly long, else None."""
    match = _NUMBER.search(text[:200])
    if match is None or len(match.group()) > 40:
        return None
    value = float(match.group())
    return value if math.isfinite(value) else None


def _lines(text: str) -> list[str]:
    """Report lines outside any per-kid section, at most MAX_LINES."""
    kept: list[str] = []
    in_kid = False
    for line in text.splitlines()[:MAX_LINES]:
        if _KID_OPEN.match(line):
            in_kid = True
        elif _KID_CLOSE.match(line):
            in_kid = False
        elif not in_kid and len(line) <= MAX_LINE:
            kept.append(line)
    return kept


def parse_counters(text: str) -> dict[str, float]:
    """`counters`: `client_http.requests = 12` -> {"client_http.requests": 12.0}."""
    values: dict[str, float] = {}
    for line in _lines(text):
        key, equals, rest = line.partition(" = ")
        key = key.strip()
        if not equals or not _COUNTER_KEY.fullmatch(key):
            continue
        value = _number(rest)
        if value is not None and key not in values:
            values[key] = value
    return values


@functools.lru_cache(maxsize=512)
def info_key(label: str) -> str:
    """An `info` line's label as squid-exporter names it: spaces to `_`, `%` to `pct`, other punctuation to `_`."""
    label = label.strip().replace("%", "pct")
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")


def parse_info(text: str) -> dict[str, float]:
    """`info`: `\\tMaximum number of file descriptors:   20000` -> {"Maximum_number_of_file_descriptors": 20000.0};
    the hit ratio lines give `<key>_5min` and `<key>_60min`; `  52 StoreEntries` gives {"StoreEntries": 52.0}."""
    values: dict[str, float] = {}
    for line in _lines(text):
        label, colon, rest = line.partition(":")
        if colon and label.startswith("\t") and rest.strip():
            key = info_key(label)
            ratios = _HIT_RATIOS.search(rest)
            if ratios:
                for window, number in (("5min", ratios.group(1)), ("60min", ratios.group(2))):
                    ratio = float(number)
                    if math.isfinite(ratio):
                        values.setdefault(f"{key}_{window}", ratio)
                continue
            value = _number(rest)
            if key and value is not None:
                values.setdefault(key, value)
            continue
        structure = _STRUCTURE.match(line)
        if structure and line.startswith("\t"):
            key = info_key(structure.group(2))
            if key:
                values.setdefault(key, float(structure.group(1)))
    return values


def parse_service_times(text: str) -> dict[tuple[str, int], float]:
    """`service_times`: `\\tCache Misses:  50%   0.01235  0.04460` -> {("Cache_Misses", 50): 0.01235} (the 5 min column)."""
    values: dict[tuple[str, int], float] = {}
    for line in _lines(text):
        match = _SERVICE_TIME.match(line)
        if match is None:
            continue
        category, percent, five_minutes = (
            info_key(match.group(1)),
            int(match.group(2)),
            float(match.group(3)),
        )
        if category and 0 < percent <= 100 and math.isfinite(five_minutes):
            values.setdefault((category, percent), five_minutes)
    return values
