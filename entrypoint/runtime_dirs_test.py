"""Runtime dirs and /dev/shm, on real files and permissions (no Squid)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from entrypoint.runtime_dirs import (
    PROBE_PREFIX,
    RuntimeDirError,
    check_shared_memory,
    prepare_runtime_dirs,
)


def test_dirs_are_created_0770_whatever_the_umask_and_probes_are_removed(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        prepare_runtime_dirs([tmp_path / "a" / "b"], shm_dir=tmp_path)
    finally:
        os.umask(old)
    for directory in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o770
    assert [p for p in tmp_path.rglob(f"{PROBE_PREFIX}*")] == []


def test_existing_dir_mode_is_left_alone(tmp_path: Path) -> None:
    existing = tmp_path / "kept"
    existing.mkdir(mode=0o700)
    os.chmod(existing, 0o700)
    prepare_runtime_dirs([existing], shm_dir=tmp_path)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o700


def test_a_stale_probe_does_not_fail_the_probe(tmp_path: Path) -> None:
    for pid in (1, os.getpid()):
        (tmp_path / f"{PROBE_PREFIX}{pid}").write_text("left by a crash")
    prepare_runtime_dirs([tmp_path], shm_dir=tmp_path)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_unusable_shm_is_explained(tmp_path: Path, kind: str) -> None:
    shm = tmp_path / "shm"
    if kind == "file":
        shm.write_text("")
    with pytest.raises(
        RuntimeDirError, match=rf"{shm} is not (usable|a directory).*medium: Memory"
    ):
        check_shared_memory(shm)


def _make_non_directory(path: Path, kind: str) -> None:
    if kind == "file":
        path.write_text("not a dir")
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "symlink to a file":
        target = path.with_name(path.name + ".target")
        target.write_text("")
        path.symlink_to(target)
    else:  # an empty file, as `touch` leaves it
        path.touch()


@pytest.mark.parametrize("kind", ["file", "FIFO", "symlink to a file", "empty file"])
@pytest.mark.parametrize("depth", [0, 1, 2])
def test_a_non_directory_in_the_way_is_named_as_such(tmp_path: Path, kind: str, depth: int) -> None:
    # Was: "Runtime directory ... is not writable: File exists" (issue 21 item 8).
    runtime = tmp_path / "var" / "lib" / "squid"
    blocker = runtime.parents[depth - 1] if depth else runtime
    blocker.parent.mkdir(parents=True, exist_ok=True)
    _make_non_directory(blocker, kind)
    with pytest.raises(RuntimeDirError) as raised:
        prepare_runtime_dirs([tmp_path / "ok", runtime], shm_dir=tmp_path)
    message = str(raised.value)
    assert f"{blocker}" in message and "where a directory is needed" in message, message
    assert "File exists" not in message and "not writable" not in message
    if depth:
        assert f"a parent of the runtime directory {runtime}" in message
    assert f"mount a volume (Kubernetes emptyDir) at {runtime}" in message
    assert blocker.exists() or blocker.is_symlink()  # never removed for the operator
