"""The health server as PID 1's child: spawn, wait until it accepts, restart, re-target, stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import entrypoint
from entrypoint.log_relay import LineRelay
from entrypoint.output_sink import OutputSink
from entrypoint.processes import ChildProcesses, describe_exit
from entrypoint.settings import Settings
from entrypoint.squid_config import ActiveConfig

HEALTH_START_TIMEOUT = 5.0
CHILD_STOP_TIMEOUT = 5.0


class HealthServerError(Exception):
    """The health server could not be started; the message says why."""


def proxy_address(config: ActiveConfig, settings: Settings) -> tuple[str, int]:
    """Where the health checks look for the proxy: the config's first http_port."""
    ports = config.http_ports
    if not ports:
        return "127.0.0.1", settings.squid_port
    first = ports[0]
    return (first.host or "127.0.0.1"), first.port


async def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


class HealthServerChild:
    def __init__(
        self,
        settings: Settings,
        children: ChildProcesses,
        log: logging.Logger,
        sinks: tuple[OutputSink, OutputSink],
    ) -> None:
        self.settings = settings
        self.children = children
        self.log = log
        self.sinks = sinks
        self.process: subprocess.Popen[bytes] | None = None
        self.argv: list[str] = []
        # Run the package by module name with the package's parent dir on PYTHONPATH:
        # this works from the source tree, Bazel runfiles and the image alike.
        package_parent = str(Path(entrypoint.__file__).resolve().parent.parent)
        environment = dict(os.environ)
        existing = environment.get("PYTHONPATH")
        environment["PYTHONPATH"] = package_parent + (os.pathsep + existing if existing else "")
        self.environment = environment

    def argv_for(self, config: ActiveConfig) -> list[str]:
        """The health server's command line: what it checks comes from the active config."""
        settings = self.settings
        proxy_host, proxy_port = proxy_address(config, settings)
        cache_dirs = [d.path for d in config.disk_cache_dirs] or [settings.spool_dir]
        argv = [
            sys.executable, "-P", "-m", "entrypoint.healthcheck_cli",
            "--port", str(settings.health_port),
            "--pid-file", str(config.pid_file),
            "--squid-comm", settings.squid_bin.name,
            "--proxy-host", proxy_host,
            "--proxy-port", str(proxy_port),
            "--config", str(config.path),
            "--log-level", settings.log_level,
        ]
        for cache_dir in cache_dirs:
            argv += ["--cache-dir", str(cache_dir)]
        return argv

    async def start(self, config: ActiveConfig) -> None:
        """Spawn it (no waiting: it answers 503 until Squid is up)."""
        self.argv = self.argv_for(config)
        self.log.info("Starting health server on port %d", self.settings.health_port)
        await self._spawn()

    async def _spawn(self) -> None:
        # Its output goes through PID 1's relays too: nobody writes to the container's
        # stdout/stderr directly, so nobody can block on them.
        out_fd, _ = await self.children.open_pipe(lambda: LineRelay(self.sinks[0]))
        err_fd, _ = await self.children.open_pipe(lambda: LineRelay(self.sinks[1]))
        try:
            self.process = self.children.spawn(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
                env=self.environment,
                cwd="/",
                process_group=0,
            )
        finally:
            os.close(out_fd)
            os.close(err_fd)

    def exit_reason(self) -> str | None:
        if self.process is None:
            return None
        code = self.children.returncode(self.process)
        return None if code is None else f"Health server exited during startup ({describe_exit(code)})"

    async def wait_accepting(self, started: float) -> None:
        """It must accept connections within HEALTH_START_TIMEOUT of `started`."""
        port = self.settings.health_port
        deadline = started + HEALTH_START_TIMEOUT
        while not await port_accepts(port):
            reason = self.exit_reason()
            if reason is not None:
                raise HealthServerError(reason)
            if time.monotonic() > deadline:
                raise HealthServerError(
                    f"Health server did not accept connections on port {port}"
                    f" within {HEALTH_START_TIMEOUT:g} s"
                )
            await asyncio.sleep(0.02)

    async def restart_if_dead(self) -> None:
        if self.process is None:
            return
        code = self.children.returncode(self.process)
        if code is not None:
            self.log.error("Health server exited unexpectedly (%s); restarting it", describe_exit(code))
            await self._spawn()

    async def follow(self, config: ActiveConfig) -> None:
        """After a reload: restart it when what it checks (ports, pid file, dirs) changed."""
        argv = self.argv_for(config)
        if argv == self.argv:
            return
        self.log.info("Health server follows the new config (restarting it)")
        await self.stop()
        self.argv = argv
        await self._spawn()

    async def stop(self) -> None:
        process = self.process
        if process is None or self.children.returncode(process) is not None:
            return
        self.children.signal(process, signal.SIGTERM)
        if await self.children.wait(process, CHILD_STOP_TIMEOUT) is None:
            self.children.kill_group(process)
            await self.children.wait(process, CHILD_STOP_TIMEOUT)
