"""Squid's pid file: the process id it names, read bounded, never blocking, never through a symlink (no asyncio: the health server reads it too)."""

from __future__ import annotations

import re
from pathlib import Path

from entrypoint.mounted_files import FileAbsent, FileProblem, FileTooBig, read_bounded

PID_MAX = 4194304  # the kernel's highest pid_max (PID_MAX_LIMIT)
PID_FILE_LIMIT = 64  # Squid writes "%d\n": 8 bytes at most
# What Squid writes: a decimal pid (no sign, no leading zero) with a newline; blanks around it are tolerated.
_PID_TEXT = re.compile(rb"[ \t\r\n]*([1-9][0-9]{0,6})[ \t\r\n]*")


class PidFileError(Exception):
    """The pid file is not a regular file holding a pid; the message names the path and what it is."""


class NoPidInFile(PidFileError):
    """A regular file that names no pid (empty, too big, not a number): stale or half-written, safe to remove."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"pid file {path} holds no pid ({reason})")
        self.reason = reason


def parse_pid(data: bytes) -> int | None:
    """The pid in the bytes of a pid file (1..PID_MAX), else None; never raises."""
    match = _PID_TEXT.fullmatch(data)
    if match is None:
        return None
    pid = int(match.group(1))  # at most 7 digits: far below int()'s digit limit
    return pid if pid <= PID_MAX else None


def read_pid_file(path: Path) -> int | None:
    """The pid in `path`, None when it does not exist; NoPidInFile or PidFileError otherwise."""
    try:
        data = read_bounded(path, PID_FILE_LIMIT, follow_symlinks=False)
    except FileAbsent:
        return None
    except FileTooBig:
        raise NoPidInFile(
            path, f"it is larger than the {PID_FILE_LIMIT} bytes a pid file holds"
        ) from None
    except FileProblem as error:
        raise PidFileError(
            f"pid file {error}: remove it (Squid writes its pid there as a regular file)"
        ) from None
    pid = parse_pid(data)
    if pid is None:
        what = (
            "it is empty"
            if not data.strip()
            else f"{len(data)} bytes that are not a pid 1-{PID_MAX}"
        )
        raise NoPidInFile(path, what)
    return pid
