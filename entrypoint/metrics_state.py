"""PID 1's own figures (reloads, drains, restarts, dropped lines), published as a small JSON file for the health server.

PID 1 writes the whole snapshot (write to a temporary name, then rename: a reader never sees half
a file) when something changed; the health server reads it at scrape time. The file sits in the
run dir, which Squid's user can write too: the reader takes known keys with finite numbers only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

STATE_FILE_NAME = "cephaloproxy-metrics.json"
MAX_STATE_BYTES = 65536
RELOAD_RESULTS = ("ok", "skipped", "failed")
STREAMS = ("stdout", "stderr")

# Key in the file -> what it counts; every value is a number.
NUMBER_KEYS = (
    "process_start_time_seconds",
    "reloads_ok",
    "reloads_skipped",
    "reloads_failed",
    "health_server_restarts",
    "log_lines_dropped_stdout",
    "log_lines_dropped_stderr",
    "draining",
    "last_drain_duration_seconds",
    "last_drain_connections",
    "config_check_duration_seconds",
)


@dataclasses.dataclass
class EntrypointMetrics:
    """PID 1's counters; `publish()` writes them when they changed (cheap to call on every tick)."""

    path: Path | None = None  # None: metrics are off, nothing is written
    process_start_time_seconds: float = dataclasses.field(default_factory=time.time)
    reloads: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(RELOAD_RESULTS, 0)
    )
    draining: bool = False
    last_drain_duration_seconds: float = 0.0
    last_drain_connections: int = 0
    config_check_duration_seconds: float = 0.0
    # Read from their owners at publish time (they count anyway): health restarts, dropped lines.
    sources: dict[str, Callable[[], float]] = dataclasses.field(default_factory=dict)
    _written: bytes = b""
    _failed: bool = False

    def reload_done(self, result: str) -> None:
        self.reloads[result] += 1
        self.publish()

    def drain_started(self, connections: int) -> None:
        self.draining, self.last_drain_connections = True, connections
        self.publish()

    def drain_ended(self, seconds: float) -> None:
        self.draining, self.last_drain_duration_seconds = False, seconds
        self.publish()

    def snapshot(self) -> dict[str, float]:
        numbers: dict[str, float] = {
            "process_start_time_seconds": self.process_start_time_seconds,
            **{f"reloads_{result}": float(count) for result, count in self.reloads.items()},
            "draining": float(self.draining),
            "last_drain_duration_seconds": self.last_drain_duration_seconds,
            "last_drain_connections": float(self.last_drain_connections),
            "config_check_duration_seconds": self.config_check_duration_seconds,
        }
        for key, source in self.sources.items():
            numbers[key] = float(source())
        return numbers

    def publish(self, log: logging.Logger | None = None) -> None:
        """Write the snapshot if it changed; a failure is logged once (metrics never stop the proxy)."""
        if self.path is None:
            return
        data = json.dumps(self.snapshot(), sort_keys=True).encode("ascii")
        if data == self._written:
            return
        # Not squid_config.write_atomically: no fsync (the figures need no durability, and an
        # fsync on PID 1's loop could stall it on a slow disk).
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        try:
            fd = os.open(
                temporary,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o640,
            )
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as error:
            if not self._failed and log is not None:
                log.warning(
                    "Cannot write the metrics state %s (%s); /metrics shows older entrypoint figures",
                    self.path,
                    error.strerror or error,
                )
            self._failed = True
            return
        self._written = data


def read_state(path: Path) -> dict[str, float]:
    """The published figures: known keys with finite numbers only; {} when absent or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        data = os.read(fd, MAX_STATE_BYTES + 1)
    except OSError:
        return {}
    finally:
        os.close(fd)
    if len(data) > MAX_STATE_BYTES:
        return {}
    try:
        loaded = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    numbers = {key: _finite(value) for key, value in loaded.items() if key in NUMBER_KEYS}
    return {key: value for key, value in numbers.items() if value is not None}


def _finite(value: object) -> float | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a float
        return None
    return number if math.isfinite(number) else None
