"""Mounted and runtime files (config, TLS secret, pid file): tell absent from broken, read them bounded, never blocking.

Only a path that truly does not exist counts as absent. A dangling or looping symlink, a
directory, a FIFO, a device or a socket is a broken mount and is reported as such, naming the
path and what it is. Kubernetes ConfigMap/Secret mounts (`name -> ..data/name`, `..data ->
..<timestamp>/`) are symlinks to regular files and read like any file; a runtime file (the pid
file) is read with `follow_symlinks=False`: a symlink there is refused, never followed.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

CONFIG_SIZE_LIMIT = 8 * 1024 * 1024
TLS_SIZE_LIMIT = 1024 * 1024


class FileProblem(Exception):
    """The path exists but cannot be used as a file; the message names it and what it is."""


class FileAbsent(FileProblem):
    """Nothing exists at the path (not even a broken symlink)."""


class FileTooBig(FileProblem):
    """A regular file larger than the reader's limit (it was not read)."""


def describe_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _ids() -> str:
    return f"UID {os.getuid()} GID {os.getgid()}"


def _untraversable(path: Path) -> str:
    """Which ancestor dir the current user cannot search, with its owner and mode."""
    for parent in reversed(path.parents):
        if not os.access(parent, os.X_OK):
            try:
                info = os.stat(parent)
                facts = f"owned by UID {info.st_uid} GID {info.st_gid}, mode {stat.filemode(info.st_mode)}"
            except OSError:
                facts = "owner and mode unknown"
            return (
                f"directory {parent} cannot be traversed by {_ids()} ({facts}):"
                f" make it searchable for the container's user or group (chmod g+x {parent})"
            )
    return f"{_ids()} may not read it: make it readable for the container's user or group (chmod g+r {path})"


def _symlink_problem(path: Path) -> FileProblem | None:
    """A problem if `path` is a symlink that cannot be followed, else None."""
    try:
        target = os.readlink(path)
    except OSError:
        return None  # not a symlink
    try:
        os.stat(path)
    except FileNotFoundError:
        return FileProblem(
            f"{path} is a dangling symlink (to '{target}', which does not exist): fix the mount"
        )
    except OSError as error:
        if error.errno == errno.ELOOP:
            return FileProblem(f"{path} is a symlink loop (to '{target}'): fix the mount")
        return None
    return None


def _problem(path: Path, error: OSError) -> FileProblem:
    if error.errno == errno.ELOOP:
        return FileProblem(f"{path} is a symlink loop: fix the mount")
    if error.errno == errno.ENOTDIR:
        return FileProblem(f"{path}: a parent of it is not a directory: fix the mount")
    if error.errno == errno.EACCES or error.errno == errno.EPERM:
        return FileProblem(f"cannot read {path}: {error.strerror}; {_untraversable(path)}")
    return FileProblem(f"cannot read {path}: {error.strerror}")


def check_file(path: Path) -> bool:
    """True for a (symlink to a) regular file, False when truly absent; FileProblem otherwise."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        # Absent, unless it is absent because a parent is a broken symlink (a broken mount).
        for parent in path.parents:
            problem = _symlink_problem(parent)
            if problem is not None:
                raise FileProblem(f"{path} cannot be reached: {problem}") from None
        return False
    except OSError as error:
        raise _problem(path, error) from None
    problem = _symlink_problem(path)
    if problem is not None:
        raise problem
    try:
        info = os.stat(path)
    except OSError as error:
        raise _problem(path, error) from None
    if not stat.S_ISREG(info.st_mode):
        raise FileProblem(
            f"{path} is {describe_kind(info.st_mode)}, not a regular file: fix the mount"
        )
    return True


def _check_unfollowed(path: Path) -> None:
    """FileAbsent, or FileProblem unless `path` itself (no symlink followed) is a regular file."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise FileAbsent(f"{path} does not exist") from None
    except OSError as error:
        raise _problem(path, error) from None
    if stat.S_ISLNK(info.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise FileProblem(
            f"{path} is a symlink (to {target!r}), not a regular file: refused, never followed"
        )
    if not stat.S_ISREG(info.st_mode):
        raise FileProblem(f"{path} is {describe_kind(info.st_mode)}, not a regular file")


def _open_regular(path: Path, follow_symlinks: bool) -> int:
    """A descriptor of the regular file at `path`; never blocks on a FIFO or device."""
    remedy = ": fix the mount" if follow_symlinks else ""
    if not follow_symlinks:
        _check_unfollowed(path)
    elif not check_file(path):
        raise FileAbsent(f"{path} does not exist")
    # O_NONBLOCK: a FIFO swapped in after the check must not hang the open or the read;
    # O_NOFOLLOW: nor may a symlink swapped in after the lstat be followed.
    flags = (
        os.O_RDONLY
        | os.O_NONBLOCK
        | os.O_CLOEXEC
        | os.O_NOCTTY
        | (0 if follow_symlinks else os.O_NOFOLLOW)
    )
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise FileAbsent(f"{path} does not exist") from None
    except OSError as error:
        if error.errno == errno.ELOOP and not follow_symlinks:
            raise FileProblem(
                f"{path} is a symlink, not a regular file: refused, never followed"
            ) from None
        raise _problem(path, error) from None
    try:
        info = os.fstat(descriptor)
    except OSError as error:
        os.close(descriptor)
        raise _problem(path, error) from None
    if not stat.S_ISREG(info.st_mode):
        os.close(descriptor)
        raise FileProblem(f"{path} is {describe_kind(info.st_mode)}, not a regular file{remedy}")
    return descriptor


def _readable_at_once(path: Path) -> bool:
    """True when `path` opens (never blocking), is a regular file and reads: what check_readable
    asks, in four calls. False on anything else: check_readable then looks closer to say why."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return False
        os.read(descriptor, 1)
    except OSError:
        return False
    finally:
        os.close(descriptor)
    return True


def check_readable(path: Path) -> None:
    """FileProblem unless `path` is a (symlink to a) regular file we may read; reads one byte at
    most and never blocks (the readiness probe asks this of the config on every request)."""
    if _readable_at_once(path):
        return
    descriptor = _open_regular(path, follow_symlinks=True)
    try:
        os.read(descriptor, 1)
    except OSError as error:
        raise _problem(path, error) from None
    finally:
        os.close(descriptor)


def read_bounded(path: Path, limit: int, follow_symlinks: bool = True) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; never blocks on a FIFO or device.

    `follow_symlinks=False` (runtime files such as the pid file): a symlink at `path` is refused.
    """
    descriptor = _open_regular(path, follow_symlinks)
    try:
        size = os.fstat(descriptor).st_size
        if size > limit:
            raise FileTooBig(f"{path} is {size} bytes, more than the {limit} bytes allowed")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(descriptor, min(65536, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise FileTooBig(f"{path} grew beyond the {limit} bytes allowed while being read")
        return b"".join(chunks)
    except OSError as error:
        raise _problem(path, error) from None
    finally:
        os.close(descriptor)
