"""Test support: freeze a process with the cgroup freezer (v1 or v2), as hung storage would; /proc then shows it in state D."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

CGROUP_ROOT = Path("/sys/fs/cgroup")
FREEZE_TIMEOUT = 10.0


def _v2_own_group() -> Path | None:
    """This process's cgroup v2 directory, when the unified hierarchy is mounted at the root."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            group = CGROUP_ROOT / line[3:].lstrip("/")
            if (group / "cgroup.procs").exists() and (CGROUP_ROOT / "cgroup.controllers").exists():
                return group
    return None


def freeze_problem() -> str | None:
    """Why processes cannot be frozen here (None: they can)."""
    if os.geteuid() != 0:
        return "freezing a process with the cgroup freezer needs root"
    if (CGROUP_ROOT / "freezer" / "cgroup.procs").exists() or _v2_own_group() is not None:
        return None
    return f"no cgroup freezer under {CGROUP_ROOT} (neither v1's freezer nor v2's cgroup.freeze)"


def _wait(predicate_file: Path, wanted: str) -> None:
    deadline = time.monotonic() + FREEZE_TIMEOUT
    while wanted not in predicate_file.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{predicate_file} did not show {wanted!r} within {FREEZE_TIMEOUT:g} s"
            )
        time.sleep(0.01)


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """`pid` (all its threads) frozen inside the block, thawed and moved back after it, whatever happens."""
    v1 = CGROUP_ROOT / "freezer"
    name = f"cephaloproxy-test-{os.getpid()}-{pid}"
    if (v1 / "cgroup.procs").exists():
        home, group = v1, v1 / name
        state, freeze, thaw, done = (
            group / "freezer.state",
            "FROZEN",
            "THAWED",
            (group / "freezer.state", "FROZEN"),
        )
    else:
        own = _v2_own_group()
        assert own is not None, freeze_problem()
        home, group = own, own / name
        state, freeze, thaw, done = (
            group / "cgroup.freeze",
            "1",
            "0",
            (group / "cgroup.events", "frozen 1"),
        )
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(pid))
        state.write_text(freeze)
        _wait(*done)
        yield
    finally:
        with contextlib.suppress(OSError):
            state.write_text(thaw)
        with contextlib.suppress(OSError):
            (home / "cgroup.procs").write_text(str(pid))  # gone already: nothing to move
        deadline = time.monotonic() + FREEZE_TIMEOUT
        while True:
            try:
                group.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
