"""Entrypoint main: settings, the config check's head start, logging, then the asyncio supervisor. Exit code is the container's."""

from __future__ import annotations

import gc
import os
import signal
import sys
import time

from entrypoint import head_start
from entrypoint.output_sink import OutputSink
from entrypoint.settings import load_settings, log_format_problem

# logging, asyncio and the modules that need them are imported only once head_start has begun
# the config check: they take longer to import than Squid takes to check (issue 27).

FINAL_FLUSH_TIMEOUT = 1.0
# Once the supervisor is done the exit is under way and bounded: these only need ignoring.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def seconds_since_exec() -> float:
    """How long this process has existed (/proc/self/stat starttime, 10 ms ticks): the
    interpreter's start and the imports before the first log line."""
    with open("/proc/self/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5)
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


def import_asyncio_without_ssl() -> None:
    """asyncio imports `ssl` only to offer TLS streams, which PID 1 never opens; `ssl` loads
    libssl and libcrypto (5-8 ms of the start, issue 27). It is refused while asyncio loads
    (asyncio then has no TLS), and imports as usual afterwards: entrypoint.tls, with SSL-bump."""
    if "ssl" in sys.modules or "asyncio" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # what `import ssl` raises ImportError for
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]


def main(early_signals: list[int] | None = None) -> int:
    """Run PID 1. `early_signals`: what entrypoint.py recorded before its imports finished."""
    pending: list[int] = early_signals if early_signals is not None else []
    if early_signals is None:  # started without entrypoint.py (python -m entrypoint.main)
        from entrypoint.signals import record_early

        record_early(pending)
    sinks = (OutputSink(1, "stdout"), OutputSink(2, "stderr"))
    problem = log_format_problem(os.environ)
    if problem is not None:  # before any record: every line would be in a format nobody asked for
        sinks[1].write_line(f"{problem}; refusing to start".encode("utf-8", errors="replace"))
        sinks[1].flush_for(FINAL_FLUSH_TIMEOUT)
        return 2
    settings, warnings = load_settings(os.environ)
    head_started = time.monotonic()
    head = head_start.begin(settings, pending)  # the config check runs while we import
    head_seconds = time.monotonic() - head_started
    import_asyncio_without_ssl()
    import asyncio
    import logging

    from entrypoint.logs import configure_logging
    from entrypoint.processes import kill_descendants_now
    from entrypoint.supervisor import Supervisor

    log = configure_logging(settings.log_level, sinks, settings.log_format)
    log.info("CephaloProxy entrypoint starting (UID: %d, GID: %d)", os.getuid(), os.getgid())
    if log.isEnabledFor(logging.DEBUG):  # the /proc read only when the line is logged
        log.debug("Phase interpreter_and_imports took %.3f s", seconds_since_exec() - head_seconds)
        log.debug(
            "Phase head_start took %.3f s (%s)",
            head_seconds,
            "config check under way" if head is not None else "left to the startup",
        )
    for warning in warnings:
        log.warning("%s", warning)
    log.info(
        "Settings: SQUID_PORT=%d HEALTH_PORT=%d LOG_LEVEL=%s SHUTDOWN_TIMEOUT=%gs LOG_FORMAT=%s",
        settings.squid_port,
        settings.health_port,
        settings.log_level,
        settings.shutdown_timeout,
        settings.log_format,
    )
    gc.enable()  # entrypoint.py held it off for the imports

    async def supervise() -> int:
        loop = asyncio.get_running_loop()
        for sink in sinks:
            sink.attach(loop)
        try:
            return await Supervisor(settings, log, sinks, head).run(pending)
        finally:
            # asyncio.run's close puts the default handlers back (a SIGTERM would then kill a
            # PID 1 that is not PID 1 of its namespace, a SIGINT raise KeyboardInterrupt inside
            # the close): hold them blocked until they are ignored below.
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            for sink in sinks:
                sink.attach(None)

    try:
        return asyncio.run(supervise())
    finally:
        for signum in STOP_SIGNALS:  # a signal held meanwhile is discarded, not acted on
            signal.signal(signum, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        # Whatever way we leave (exception included), no descendant outlives us.
        kill_descendants_now()
        for sink in sinks:
            sink.flush_for(FINAL_FLUSH_TIMEOUT)


if __name__ == "__main__":
    sys.exit(main())
