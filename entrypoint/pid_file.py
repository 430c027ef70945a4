"""Squid's pid file: the process id it names, if any (no asyncio: the health server reads it too)."""

from __future__ import annotations

from pathlib import Path


def read_pid_file(path: Path) -> int | None:
    """The pid in `path`, or None when it is missing, unreadable or not a number."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
