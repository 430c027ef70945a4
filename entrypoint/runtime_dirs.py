"""Runtime dirs: create them if missing (0770) and prove they are writable with a probe file."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable


# Group-writable: OpenShift runs the next start as another UID in group 0.
DIR_MODE = 0o770
PROBE_PREFIX = ".cephaloproxy-write-probe-"
# Squid's shared memory segments (shm_open) live here; it is never created, only checked.
SHM_DIR = Path("/dev/shm")


class RuntimeDirError(Exception):
    """A runtime dir cannot be created or written; the message has the facts and the fix."""


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def describe_unwritable(path: Path, error: OSError) -> str:
    existing = _nearest_existing(path)
    try:
        info = os.stat(existing)
        owner = (
            f"owned by UID {info.st_uid} GID {info.st_gid}, mode {stat.filemode(info.st_mode)}"
            f" ({oct(stat.S_IMODE(info.st_mode))})"
        )
    except OSError:
        owner = "owner and mode unknown"
    where = "" if existing == path else f" (nearest existing parent {existing})"
    return (
        f"Runtime directory {path} is not writable: {error.strerror}."
        f" Running as UID {os.getuid()} GID {os.getgid()}"
        f" (groups {','.join(str(g) for g in os.getgroups()) or 'none'});"
        f" {existing}{where} is {owner}."
        f" Fix: mount a writable volume there (Kubernetes emptyDir), set the pod's"
        f" securityContext.fsGroup, or make it group-writable for GID 0"
        f" (chmod g+rwX {existing})."
    )


def non_directory_in_the_way(path: Path) -> str | None:
    """A message when `path` or one of its parents exists but is not a directory (or a link to one)."""
    for candidate in (path, *path.parents):
        try:
            info = os.stat(candidate)
        except OSError:
            continue  # missing (made below) or unreadable (the probe reports it)
        if stat.S_ISDIR(info.st_mode):
            return None
        kind = (
            "a regular file"
            if stat.S_ISREG(info.st_mode)
            else f"not a directory ({stat.filemode(info.st_mode)})"
        )
        what = (
            f"Runtime directory {path}"
            if candidate == path
            else f"{candidate}, a parent of the runtime directory {path},"
        )
        return (
            f"{what} is {kind} where a directory is needed:"
            f" remove or rename it, or mount a volume (Kubernetes emptyDir) at {path}"
        )
    return None


def make_dirs(path: Path) -> None:
    """Create `path` and missing parents with DIR_MODE (not the umask's 0755); existing dirs are left alone."""
    missing = []
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # created concurrently: not ours to chmod
        os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask


def probe_writable(path: Path) -> None:
    """Create, write and remove a uniquely named file in `path` (PID 1 has the same pid every start)."""
    descriptor, name = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=path)
    try:
        os.write(descriptor, b"probe\n")
    finally:
        os.close(descriptor)
        os.unlink(name)


def check_shared_memory(shm_dir: Path = SHM_DIR) -> None:
    """/dev/shm is a writable directory, or Squid dies with `Ipc::Mem::Segment::create failed`."""
    fix = (
        f"Squid needs a writable {shm_dir} for its shared memory: give the container one"
        " (Docker provides it by default; --shm-size sets its size; in Kubernetes mount an"
        f" emptyDir with medium: Memory at {shm_dir})"
    )
    try:
        info = os.stat(shm_dir)
    except OSError as error:
        raise RuntimeDirError(f"{shm_dir} is not usable ({error.strerror}). {fix}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise RuntimeDirError(f"{shm_dir} is not a directory. {fix}")
    try:
        probe_writable(shm_dir)
    except OSError as error:
        raise RuntimeDirError(
            f"{shm_dir} is not writable: {error.strerror} (running as UID {os.getuid()} GID {os.getgid()};"
            f" it is owned by UID {info.st_uid} GID {info.st_gid}, mode {stat.filemode(info.st_mode)}). {fix}"
        ) from None


def prepare_runtime_dirs(paths: Iterable[Path], shm_dir: Path = SHM_DIR) -> list[Path]:
    """Create and probe each dir, then check shared memory; returns the dirs in order.

    Raises RuntimeDirError on the first failure.
    """
    prepared: list[Path] = []
    for path in paths:
        if path in prepared:
            continue
        in_the_way = non_directory_in_the_way(path)
        if in_the_way is not None:
            raise RuntimeDirError(in_the_way)
        try:
            make_dirs(path)
            probe_writable(path)
        except OSError as error:
            raise RuntimeDirError(describe_unwritable(path, error)) from None
        prepared.append(path)
    check_shared_memory(shm_dir)
    return prepared
