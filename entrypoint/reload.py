"""SIGHUP: re-derive everything from the config, serialized, keeping the running Squid on any error.

Order: re-select and parse the config (`squid -k parse`), re-validate the TLS secret, merge it
atomically, point the health server at the new ports, then `squid -k reconfigure` (SIGHUP to
the master). Any failure before the reconfigure leaves Squid and what the health server checks
as they were. At most one reload runs; SIGHUPs meanwhile collapse into one pending reload.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Awaitable, Callable

from entrypoint.config_steps import install_tls, recheck_cert_dbs, select_config, validate_tls
from entrypoint.squid_config import ConfigError
from entrypoint.squid_process import SquidError
from entrypoint.state import ProxyState


class Serializer:
    """Runs `job` once at a time; requests while it runs collapse into one more run."""

    def __init__(self, job: Callable[[], Awaitable[None]]) -> None:
        self.job = job
        self.pending = False
        self.task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def request(self) -> None:
        if self.running:
            self.pending = True
            return
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.pending = False
            await self.job()
            if not self.pending:
                return

    def cancel(self) -> None:
        self.pending = False
        if self.task is not None:
            self.task.cancel()


async def reload_config(state: ProxyState) -> None:
    """One reload; logs its outcome, never raises for a bad config or secret."""
    log, settings = state.log, state.settings
    squid, old = state.squid, state.config
    if squid is None or old is None or squid.exited.done():
        return
    try:
        config = select_config(settings)
        if config.path != old.path:
            raise ConfigError(
                f"the active config changed from {old.path} to {config.path}; Squid can only"
                " re-read the file it was started with: restart the container to switch"
            )
        if config.rendered is not None and config.rendered != old.rendered:
            raise ConfigError(f"the packaged default {config.source} changed; restart the container")
        log.info("Reloading: checking Squid config %s", config.path)
        await state.commands.check_config(config)
        material = validate_tls(config, settings)
        if material is not None:
            await install_tls(material, config, settings, state.children, log, state.commands.stdio_owner)
    except (ConfigError, SquidError) as error:
        log.error("Reload skipped, Squid keeps its current config: %s", error)
        return
    state.config = config
    await state.health.follow(config)
    squid.send(signal.SIGHUP)  # what `squid -k reconfigure` does, without another process
    log.info("Squid reconfigured (PID %d kept)", state.squid_pid or squid.pid)
    recheck_cert_dbs(state)  # leaves of the previous CA stored meanwhile (config_steps.py)
