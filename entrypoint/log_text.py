"""What every line passes before it is written to a log: redaction, then control characters escaped.

Both PID 1's log records (logs.py) and the lines relayed from Squid and the other children
(log_relay.py) go through here, so no secret and no raw control character reaches a log,
whatever its source. Escaped are C0 (but TAB), DEL, C1 (NEL U+0085), and every other
character Python does not call printable (U+2028/U+2029, bidi overrides, non-characters),
as `\\x1b`, `\\n`, `\\r`, `\\u0085`, `\\U000e0001`; a byte that is not UTF-8 becomes `\\xNN`. So
one record or relayed line is always exactly one output line, and nothing in it moves the
cursor, clears the terminal or forges another line.
"""

from __future__ import annotations

import re

from entrypoint.redact import needs_redaction, redact, redact_text

_CANDIDATE = re.compile(r"[^\t\x20-\x7e]")  # ASCII printables and TAB are always kept
_SHORT = {"\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (decoded with surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if char.isprintable():
        return char
    if char in _SHORT:
        return _SHORT[char]
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escape_controls(text: str) -> str:
    """`text` with every non-printable character (but TAB) escaped: one line, safe on a terminal."""
    if text.isascii() and text.isprintable():
        return text
    return _CANDIDATE.sub(_escape, text)


def safe_line(line: str) -> str:
    """A relayed line as it may be logged: redacted, then escaped."""
    return escape_controls(redact(line))


def safe_lines(lines: list[str]) -> list[str]:
    """Each of `lines` as safe_line makes it. One look at all of them first (the common case, an
    access log's lines, holds no trigger word, no remembered value and nothing to escape): then
    they are returned as they are, without a per-line pass."""
    joined = "\n".join(lines)
    if (
        joined.isascii()
        and joined.replace("\n", "").isprintable()
        and not needs_redaction(joined.casefold())
    ):
        return lines
    return [safe_line(line) for line in lines]


def safe_record(text: str) -> str:
    """A formatted log record (maybe several lines, a traceback) as one safe output line."""
    return escape_controls(redact_text(text))
