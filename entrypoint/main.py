"""Entrypoint main: settings, logging, then the asyncio supervisor. Exit code is the container's."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from types import FrameType

from entrypoint.logs import configure_logging
from entrypoint.settings import load_settings
from entrypoint.supervisor import Supervisor

_early_signals: list[int] = []


def _remember_signal(signum: int, frame: FrameType | None) -> None:
    _early_signals.append(signum)


def main() -> int:
    # Before anything can take time: a signal that arrives now must abort startup
    # cleanly, not kill us with the default action (or be ignored, as PID 1).
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _remember_signal)
    settings, warnings = load_settings(os.environ)
    log = configure_logging(settings.log_level)
    log.info("CephaloProxy entrypoint starting (UID: %d, GID: %d)", os.getuid(), os.getgid())
    for warning in warnings:
        log.warning("%s", warning)
    log.info(
        "Settings: SQUID_PORT=%d HEALTH_PORT=%d LOG_LEVEL=%s SHUTDOWN_TIMEOUT=%gs",
        settings.squid_port, settings.health_port, settings.log_level, settings.shutdown_timeout,
    )

    async def supervise() -> int:
        return await Supervisor(settings, log).run(_early_signals)

    code = asyncio.run(supervise())
    sys.stdout.flush()
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
