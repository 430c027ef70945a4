"""Cache initialisation end to end: an interrupted or failed `squid -z` is completed at the next start."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from entrypoint.squid_config import CACHE_MARKER
from tests.entrypoint.testing import (
    EntrypointRun,
    Launcher,
    Workspace,
    http_get,
    session_processes,
    start_local_http_server,
    wait_until,
)

DEFAULT_CACHE_DIR = "cache_dir ufs /var/spool/squid 1024 16 64"


def cache_config(workspace: Workspace, cache_dir: str) -> Path:
    """The packaged default on the test's ports and dirs, with `cache_dir` (a format string
    taking {spool}) instead of its own."""
    spool = workspace.runtime_dir("spool")
    text = workspace.default_config.read_text()
    assert DEFAULT_CACHE_DIR in text
    return workspace.write_custom_config(
        text.replace(DEFAULT_CACHE_DIR, cache_dir.format(spool=spool / "cache"))
        .replace("http_port 3128", f"http_port 127.0.0.1:{workspace.squid_port}")
        .replace("/var/run/squid", str(workspace.runtime_dir("run")))
        .replace("/var/spool/squid", str(spool))
    )


def assert_serves(workspace: Workspace, run: EntrypointRun) -> None:
    run.wait_ready(120)
    origin = start_local_http_server(f"served after cache init {uuid.uuid4()}")
    try:
        status, body, _ = http_get(
            f"http://127.0.0.1:{origin.port}/page",
            proxy=f"http://127.0.0.1:{workspace.squid_port}",
            timeout=30,
        )
    finally:
        origin.close()
    assert (status, body) == (200, origin.body), run.output[-3000:]


def squid_z_pid(run: EntrypointRun) -> int | None:
    for pid in session_processes(run.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-z" in argv:
            return pid
    return None


def stop(run: EntrypointRun, how: str) -> None:
    """Stop the container the way `how` names: SIGTERM (docker stop) or SIGKILL (its timeout)."""
    if how == "SIGTERM":
        run.process.send_signal(signal.SIGTERM)
        run.wait_exit(30)  # bounded: a stop must not hang on the stopped `squid -z`
    else:
        os.kill(run.pid, signal.SIGKILL)
        for pid in session_processes(run.pid):
            # One may end by itself meanwhile (the health server, started during a slow -z,
            # exits when PID 1 goes): gone is what this wants.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run.wait_exit(30)
    run.cleanup()
    assert wait_until(lambda: run.descendants_left() == [], 10)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_first_start_stopped_during_squid_z_completes_the_cache_at_the_next_start(
    workspace: Workspace, launch: Launcher, how: str
) -> None:
    # 128 x 256 directories: -z takes long enough to be caught after its first L1 dir.
    cache_config(workspace, "cache_dir ufs {spool} 1024 128 256")
    cache = workspace.runtime_dir("spool") / "cache"
    run = launch()
    assert wait_until(lambda: (cache / "00").is_dir(), 60, interval=0.001), run.output[-3000:]
    pid = squid_z_pid(run)
    assert pid is not None, "squid -z not found although its first dir exists"
    os.kill(pid, signal.SIGSTOP)  # the stop lands mid -z, whatever the machine's speed
    stop(run, how)
    assert (cache / "00").is_dir() and not (cache / "7F").exists(), (
        "the first -z was not interrupted"
    )
    assert not (cache / CACHE_MARKER).exists()

    second = launch()
    assert_serves(workspace, second)  # was: FATAL: Failed to verify one of the swap directories
    assert "Initialising Squid cache" in second.stdout
    assert all((cache / f"{l1:02X}" / f"{l2:02X}").is_dir() for l1 in range(128) for l2 in (0, 255))
    assert (cache / CACHE_MARKER).is_file()


def _ufs_first_l1_only(cache: Path) -> None:
    for l2 in range(64):
        (cache / "00" / f"{l2:02X}").mkdir(parents=True)


def _ufs_first_l1_half_made(cache: Path) -> None:
    for l2 in range(10):
        (cache / "00" / f"{l2:02X}").mkdir(parents=True)


def _rock_db_cut_short(cache: Path) -> None:
    cache.mkdir()
    (cache / "rock").write_bytes(b"")  # -z opened it and was stopped before sizing it


PARTIAL_CACHES = {
    "ufs, only the first L1 dir": ("cache_dir ufs {spool} 64 16 64", _ufs_first_l1_only),
    "ufs, the first L1 dir half made": ("cache_dir ufs {spool} 64 16 64", _ufs_first_l1_half_made),
    "aufs, only the first L1 dir": ("cache_dir aufs {spool} 64 16 64", _ufs_first_l1_only),
    "rock, db file cut short": ("cache_dir rock {spool} 64", _rock_db_cut_short),
}


@pytest.mark.parametrize("case", PARTIAL_CACHES)
def test_a_partial_cache_is_completed(workspace: Workspace, launch: Launcher, case: str) -> None:
    cache_dir, make = PARTIAL_CACHES[case]
    cache_config(workspace, cache_dir)
    cache = workspace.runtime_dir("spool") / "cache"
    workspace.make_dir(cache.parent)
    make(cache)
    for path in [cache, *cache.rglob("*")]:
        os.chmod(path, 0o770 if path.is_dir() else 0o660)
        if os.geteuid() == 0:
            os.chown(path, 0, 0)
    run = launch()
    if "rock" in case:
        # Rock's disker needs IPC sockets under the compiled-in run dir, which test runs do not
        # own: only what `squid -z` made is checked (Squid 7.7 skips any existing db file).
        assert wait_until(
            lambda: (cache / CACHE_MARKER).is_file() or run.process.poll() is not None, 120
        )
        assert (cache / CACHE_MARKER).is_file(), run.output[-3000:]
        assert (cache / "rock").stat().st_size == 64 * 1024 * 1024
        return
    assert_serves(workspace, run)
    assert (cache / CACHE_MARKER).is_file()
    assert all((cache / f"{l1:02X}" / f"{l2:02X}").is_dir() for l1 in range(16) for l2 in range(64))


def test_a_complete_cache_of_an_older_image_keeps_working_and_gets_the_marker(
    workspace: Workspace, launch: Launcher
) -> None:
    cache_config(workspace, "cache_dir ufs {spool} 64 16 64")
    cache = workspace.runtime_dir("spool") / "cache"
    first = launch()
    first.wait_ready(120)
    first.process.send_signal(signal.SIGTERM)
    assert first.wait_exit(60) == 0
    (cache / CACHE_MARKER).unlink()  # an older image wrote none
    kept = cache / "0A" / "3F" / "00000001"
    kept.write_bytes(b"a cached object\n")
    second = launch()
    assert_serves(workspace, second)
    assert (cache / CACHE_MARKER).is_file()
    assert kept.read_bytes() == b"a cached object\n"  # -z only adds what is missing

    second.process.send_signal(signal.SIGTERM)
    assert second.wait_exit(60) == 0
    third = launch()
    third.wait_ready(120)
    assert "Initialising Squid cache" not in third.stdout  # the marker skips -z


def test_squid_z_failing_for_want_of_space_is_completed_once_there_is_space(
    workspace: Workspace, launch: Launcher
) -> None:
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("needs root and mount for a small tmpfs")
    cache_config(workspace, "cache_dir ufs {spool} 64 16 64")
    spool = workspace.make_dir(workspace.runtime_dir("spool"))
    cache = spool / "cache"
    # Room for about 300 inodes: -z runs out after a few of its 16 x 64 dirs, as on a full disk.
    result = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "nr_inodes=300,mode=0770,gid=0", "tmpfs", str(spool)],
        capture_output=True,
        timeout=30,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode()}")
    try:
        run = launch()
        assert run.wait_exit(120) == 1
        assert "Squid cache initialisation failed" in run.stderr, run.output[-3000:]
        assert (cache / "00").is_dir() and not (cache / CACHE_MARKER).exists()
        run.cleanup()
        subprocess.run(
            [mount, "-o", "remount,nr_inodes=100000", str(spool)], check=True, timeout=30
        )
        again = launch()
        assert_serves(workspace, again)
        assert (cache / CACHE_MARKER).is_file()
        again.cleanup()
    finally:
        deadline = time.monotonic() + 30
        while (
            subprocess.run(["umount", str(spool)], capture_output=True, timeout=30).returncode != 0
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"cannot unmount {spool}")
            time.sleep(0.2)
