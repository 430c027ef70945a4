"""Path globs for image layers: which paths a layer drops and which an image may hold.

One syntax for both the layer filters (layer_builder) and the allowlist
(allowlist): paths are relative to the image root, `*`, `?` and `[...]` match
inside one path segment, and `**` matches any number of whole segments, so
`usr/share/man/**` is the directory itself and everything below it. Rules are
ordered and the first matching one decides, which lets a narrow rule carve an
exception out of a wider one that follows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


class RuleError(Exception):
    """A rule cannot be parsed; the message names it."""


def relative(path: str) -> str:
    """'/usr/bin/' or './usr/bin' -> 'usr/bin'."""
    stripped = path[2:] if path.startswith("./") else path
    return stripped.strip("/")


def _segment_regex(segment: str, glob: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = segment.find("]", index + 2)
            if end < 0:
                raise RuleError(f"unclosed '[' in {glob!r}")
            body = segment[index + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            index = end
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


@lru_cache(maxsize=None)
def compile_glob(glob: str) -> re.Pattern[str]:
    """The regex for one glob (see the module docstring for the syntax)."""
    path = relative(glob)
    if not path:
        raise RuleError("an empty glob matches nothing; give a path below the root")
    parts = path.split("/")
    regex = ""
    need_separator = False
    for position, part in enumerate(parts):
        first, last = position == 0, position == len(parts) - 1
        if part == "**":
            if first and last:
                regex += ".*"
            elif first:
                regex += "(?:[^/]+/)*"  # "**/x": x at any depth
                need_separator = False
                continue
            elif last:
                regex += "(?:/.*)?"  # "a/**": a itself and everything below
            else:
                regex += "(?:/[^/]+)*"  # "a/**/b": a/b, a/x/b, ...
            need_separator = True
            continue
        if "**" in part:
            raise RuleError(f"'**' must be a whole path segment in {glob!r}")
        if need_separator:
            regex += "/"
        regex += _segment_regex(part, glob)
        need_separator = True
    return re.compile(regex + r"\Z")


def matches(glob: str, path: str) -> bool:
    return compile_glob(glob).match(relative(path)) is not None


@dataclass(frozen=True)
class Rule:
    """One ordered rule: a glob and what it says about the paths it matches."""

    glob: str
    verdict: str  # for filters "keep" or "drop"; for the allowlist the allowed kinds or "-"
    line: int = 0

    def matches(self, path: str) -> bool:
        return matches(self.glob, path)


def first_match(rules: list[Rule], path: str) -> Rule | None:
    for rule in rules:
        if rule.matches(path):
            return rule
    return None


def parse_filter(lines: list[str]) -> list[Rule]:
    """Filter rules: '-GLOB' drops the paths it matches, '+GLOB' keeps them.

    The first matching rule wins and unmatched paths are kept, so
    ['+usr/share/doc/*/copyright', '-usr/share/doc/**'] keeps only the
    copyright files of /usr/share/doc.
    """
    rules: list[Rule] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        sign, glob = line[0], line[1:].strip()
        if sign not in "+-" or not glob:
            raise RuleError(f"filter rule {raw!r}: write '-GLOB' (drop) or '+GLOB' (keep)")
        compile_glob(glob)
        rules.append(Rule(glob=glob, verdict="keep" if sign == "+" else "drop", line=number))
    return rules


def dropped(rules: list[Rule], path: str) -> bool:
    rule = first_match(rules, path)
    return rule is not None and rule.verdict == "drop"
