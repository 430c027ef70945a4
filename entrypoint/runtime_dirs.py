"""Runtime dirs: create them if missing and prove they are writable with a probe file."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable


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
        owner = f"owned by UID {info.st_uid} GID {info.st_gid}, mode {stat.filemode(info.st_mode)}" \
            f" ({oct(stat.S_IMODE(info.st_mode))})"
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


def prepare_runtime_dirs(paths: Iterable[Path]) -> list[Path]:
    """Create and probe each dir; returns them in order, raises RuntimeDirError on the first failure."""
    prepared: list[Path] = []
    for path in paths:
        if path in prepared:
            continue
        probe = path / f".cephaloproxy-write-probe-{os.getpid()}"
        try:
            path.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(descriptor, b"probe\n")
            finally:
                os.close(descriptor)
            os.unlink(probe)
        except OSError as error:
            raise RuntimeDirError(describe_unwritable(path, error)) from None
        prepared.append(path)
    return prepared
