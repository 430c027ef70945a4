"""Squid's pid file: the process id it names, read bounded, never blocking, never through a symlink (no asyncio: the health server reads it too)."""

from __future__ import annotations

import os
import re
import stat
import time
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


# A file changed within this long before it was read may change again without its ctime
# moving (timestamps advance by the kernel's clock tick): such a read is not kept ("racy git").
SETTLED_NS = 1_000_000_000


class CachedPidFile:
    """read_pid_file for a file asked again and again (each health probe): while an lstat shows
    the same file (device, inode, size, mode, mtime, ctime) as at the last read, that read's
    answer stands and nothing is opened. Any write, rename over it, chmod or replacement moves
    its ctime or inode, so it is read again; a read of a file changed under SETTLED_NS before is
    not kept (a second write within the same clock tick would not move the ctime)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, ...] | None = None
        self._pid: int | None = None

    def read(self) -> int | None:
        """As read_pid_file(path)."""
        try:
            info = os.lstat(self.path)
        except OSError:
            info = None
        seen = (
            None
            if info is None
            else (
                info.st_dev,
                info.st_ino,
                info.st_size,
                info.st_mode,
                info.st_mtime_ns,
                info.st_ctime_ns,
            )
        )
        if seen is not None and seen == self._seen:
            return self._pid
        self._seen = None
        pid = read_pid_file(self.path)  # raises as it always did
        if seen is not None and stat.S_ISREG(seen[3]) and time.time_ns() - seen[5] >= SETTLED_NS:
            self._seen, self._pid = seen, pid
        return pid
