"""Entrypoint main: settings, logging, then the asyncio supervisor. Exit code is the container's."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

from entrypoint.logs import configure_logging
from entrypoint.output_sink import OutputSink
from entrypoint.processes import kill_descendants_now
from entrypoint.settings import load_settings
from entrypoint.signals import record_early

FINAL_FLUSH_TIMEOUT = 1.0


def seconds_since_exec() -> float:
    """How long this process has existed (/proc/self/stat starttime, 10 ms ticks): the
    interpreter's start and the imports before the first log line."""
    with open("/proc/self/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5)
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


def main(early_signals: list[int] | None = None) -> int:
    """Run PID 1. `early_signals`: what entrypoint.py recorded before its imports finished."""
    pending: list[int] = early_signals if early_signals is not None else []
    if early_signals is None:
        record_early(pending)  # started without entrypoint.py (python -m entrypoint.main)
    sinks = (OutputSink(1, "stdout"), OutputSink(2, "stderr"))
    settings, warnings = load_settings(os.environ)
    log = configure_logging(settings.log_level, sinks)
    log.info("CephaloProxy entrypoint starting (UID: %d, GID: %d)", os.getuid(), os.getgid())
    if log.isEnabledFor(logging.DEBUG):  # the /proc read only when the line is logged
        log.debug("Phase interpreter_and_imports took %.3f s", seconds_since_exec())
    for warning in warnings:
        log.warning("%s", warning)
    log.info(
        "Settings: SQUID_PORT=%d HEALTH_PORT=%d LOG_LEVEL=%s SHUTDOWN_TIMEOUT=%gs",
        settings.squid_port, settings.health_port, settings.log_level, settings.shutdown_timeout,
    )
    import asyncio  # after the first log line: nothing above needs it

    from entrypoint.supervisor import Supervisor

    async def supervise() -> int:
        loop = asyncio.get_running_loop()
        for sink in sinks:
            sink.attach(loop)
        try:
            return await Supervisor(settings, log, sinks).run(pending)
        finally:
            for sink in sinks:
                sink.attach(None)

    try:
        return asyncio.run(supervise())
    finally:
        # asyncio.run put the default handlers back: a SIGTERM now (not PID 1: `docker --init`,
        # a test) would kill us before the last kill and flush, a SIGINT raise
        # KeyboardInterrupt. The exit is under way and bounded, so they only need ignoring.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        # Whatever way we leave (exception included), no descendant outlives us.
        kill_descendants_now()
        for sink in sinks:
            sink.flush_for(FINAL_FLUSH_TIMEOUT)


if __name__ == "__main__":
    sys.exit(main())
