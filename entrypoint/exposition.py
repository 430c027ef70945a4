"""Prometheus text exposition (format 0.0.4) writer: metric families in, valid text out, whatever the values.

Written by hand (runtime is standard library only; prometheus_client is a test dependency): names
are checked against the format's grammar, label values escaped, values formatted so that no
input, however hostile, can produce an invalid line or a second series of the same name and labels.
"""

from __future__ import annotations

import dataclasses
import math
import re

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TYPES = ("counter", "gauge")

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

Labels = tuple[tuple[str, str], ...]
_CHECKED_LABELS: set[str] = set()  # label names already checked (a scrape adds ~200 samples)

# Characters other tools take for line ends or terminal controls (the format itself only knows
# \n): replaced, so a line of the exposition is a line for every reader. Lone surrogates too
# (not encodable as UTF-8).
_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


@dataclasses.dataclass
class Family:
    """One metric family: its samples in insertion order, a later sample with the same labels replacing the earlier."""

    name: str
    type: str
    help: str
    samples: dict[Labels, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or self.type not in TYPES:
            raise ValueError(f"invalid metric family {self.name!r} ({self.type})")

    def add(self, value: float, /, **labels: str) -> Family:
        for label in labels:
            if label not in _CHECKED_LABELS:
                if not _LABEL_NAME.match(label) or label.startswith("__"):
                    raise ValueError(f"invalid label name {label!r} in {self.name}")
                _CHECKED_LABELS.add(label)
        # Keyed by the value as written: two values that differ only in a replaced character are one series.
        self.samples[
            tuple(sorted((label, _UNSAFE.sub("\ufffd", text)) for label, text in labels.items()))
        ] = value
        return self


def gauge(name: str, help_text: str, value: float | None = None, /, **labels: str) -> Family:
    family = Family(name, "gauge", help_text)
    return family.add(value, **labels) if value is not None else family


def counter(name: str, help_text: str, value: float | None = None, /, **labels: str) -> Family:
    family = Family(name, "counter", help_text)
    return family.add(value, **labels) if value is not None else family


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**63:
        return str(int(value))
    return repr(float(value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return _UNSAFE.sub("\ufffd", text).replace("\\", "\\\\").replace("\n", "\\n")


def render(families: list[Family]) -> str:
    """The exposition text; a family named twice keeps its first occurrence (never a duplicate series)."""
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        if family.name in seen:
            continue
        seen.add(family.name)
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for labels, value in family.samples.items():
            shown = ",".join(f'{key}="{escape_label_value(text)}"' for key, text in labels)
            lines.append(
                f"{family.name}{{{shown}}} {format_value(value)}"
                if shown
                else f"{family.name} {format_value(value)}"
            )
    return "\n".join(lines) + "\n"
