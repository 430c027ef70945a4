"""Watching the running proxy: Squid's death ends the container, a dead health server is restarted."""

from __future__ import annotations

import asyncio

from entrypoint.processes import describe_exit
from entrypoint.squid_process import is_live_process
from entrypoint.state import ProxyState

MONITOR_INTERVAL = 0.5


async def watch(state: ProxyState, shutdown_requested: asyncio.Event) -> str | None:
    """Returns None when a shutdown was requested, else why Squid is gone.

    Raises HealthError when the health server cannot be restarted (its port was taken).
    """
    squid = state.squid
    assert squid is not None
    shutdown = asyncio.ensure_future(shutdown_requested.wait())
    try:
        while True:
            await asyncio.wait(
                {squid.exited, shutdown},
                timeout=MONITOR_INTERVAL,
                return_when=asyncio.FIRST_COMPLETED,
            )
            state.children.reap()
            if shutdown_requested.is_set():
                return None
            pid = state.squid_pid or squid.pid
            if squid.exited.done():
                return describe_exit(squid.exited.result())
            if not is_live_process(pid, state.commands.comm):
                return "process vanished"
            state.health.keep_alive()
    finally:
        shutdown.cancel()
