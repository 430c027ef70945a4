"""The config check's head start: config read, dirs, snapshot and `squid -k parse` begun before the heavy imports.

asyncio and the rest of the package take longer to import than Squid takes to check its config
(issue 27: about 50 ms against 30 ms on two cores), so PID 1 starts the check first and imports
while it runs. Best effort: on anything unusual (a signal, a read that fails or hangs, root,
SSL-bump, a dir or snapshot that cannot be written, a fork refused) it undoes nothing that
matters and returns None, and the startup does every step itself, with its own messages.
Nothing is logged here: the startup logs each step in the contract's order.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from pathlib import Path

from entrypoint import config_snapshot, runtime_dirs, squid_config
from entrypoint.config_snapshot import Snapshot
from entrypoint.settings import Settings
from entrypoint.squid_config import ActiveConfig

# Longer than this and the startup reads again itself (with its own limit and message).
READ_WAIT = squid_config.READ_TIME_LIMIT


@dataclasses.dataclass
class HeadStart:
    config: ActiveConfig
    dirs: list[Path]  # prepared: made and probed writable
    snapshot: Snapshot  # already what Squid reads
    parse: subprocess.Popen[bytes]  # `squid -k parse` of the snapshot, running
    output_fd: int  # the read end of its stdout+stderr (the startup's to close)
    started: float  # time.monotonic() when the check began
    read_at_ns: int  # time.time_ns() before the config was read (watch mode compares)


def begin(settings: Settings, pending_signals: list[int]) -> HeadStart | None:
    """The check under way, or None (the startup then does it all)."""
    if os.geteuid() == 0 or not os.access(settings.squid_bin, os.X_OK):
        return None  # as root, who owns the dirs is decided first (`squid -v`)
    read_at_ns = time.time_ns()
    config = read_config(settings, pending_signals)
    if config is None or config.pid_file is None or config.uses_ssl_bump:
        return None  # SSL-bump: the check needs the CA installed first
    prepared = prepare_snapshot(settings, config, config.pid_file)
    if prepared is None or pending_signals:  # stopping: start nothing more
        return None
    return spawn_check(settings, config, *prepared, read_at_ns)


def prepare_snapshot(
    settings: Settings, config: ActiveConfig, pid_file: Path
) -> tuple[list[Path], Snapshot] | None:
    """The runtime dirs made and probed, the snapshot written and active; None when one fails."""
    dirs = [*settings.runtime_dirs, pid_file.parent]
    dirs += [cache_dir.path for cache_dir in config.disk_cache_dirs]
    try:
        dirs = runtime_dirs.prepare_runtime_dirs(dirs)
        snapshot = config_snapshot.write(config)
    except (OSError, runtime_dirs.RuntimeDirError, squid_config.ConfigError):
        return None
    try:
        config_snapshot.activate(snapshot)
    except OSError:
        config_snapshot.discard(snapshot)
        return None
    return dirs, snapshot


def read_config(settings: Settings, pending_signals: list[int]) -> ActiveConfig | None:
    """`select_config` in a thread (a hung file system must not hold PID 1); None on any problem."""
    found: list[ActiveConfig] = []
    cancel = threading.Event()

    def work() -> None:
        try:
            found.append(squid_config.select_config(settings, cancel))
        except Exception:  # the startup reads again and says what is wrong
            pass

    reader = threading.Thread(target=work, name="cephaloproxy-config", daemon=True)
    try:
        reader.start()
    except RuntimeError:  # no thread to be had: the startup says so
        return None
    deadline = time.monotonic() + READ_WAIT
    while reader.is_alive():
        reader.join(0.05)  # returns as soon as the read is done; the loop only looks at signals
        if pending_signals or time.monotonic() > deadline:
            cancel.set()
            return None
    return found[0] if found else None


def spawn_check(
    settings: Settings,
    config: ActiveConfig,
    dirs: list[Path],
    snapshot: Snapshot,
    read_at_ns: int,
) -> HeadStart | None:
    """`squid -k parse` of the active snapshot in its own process group, output to a pipe."""
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, False)
    started = time.monotonic()
    try:
        parse = subprocess.Popen(
            [str(settings.squid_bin), "-k", "parse", "-f", str(config.path)],
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            process_group=0,
        )
    except OSError:
        os.close(read_fd)
        return None
    finally:
        os.close(write_fd)
    return HeadStart(config, dirs, snapshot, parse, read_fd, started, read_at_ns)
