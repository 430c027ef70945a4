"""The health server as PID 1's child: spawn it, prove it listens, restart it with backoff, follow reloads, stop it.

Proof of listening is a line the child writes, after listen(), on a pipe only it was given
(`--ready-fd`): a connect to HEALTH_PORT would also succeed against somebody else's listener.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, Protocol

import entrypoint
from entrypoint.metrics_state import STATE_FILE_NAME
from entrypoint.processes import ChildProcesses, ForkError, describe_exit
from entrypoint.settings import Settings
from entrypoint.squid_config import ActiveConfig, parse_listen_address

# Spawn -> "listening" report, each start and restart. A server that cannot bind reports that
# at once, so only a hung one waits this out; an interpreter on a CPU-throttled pod or under
# arm64 emulation (qemu) needs seconds just to start, so the limit is Squid's own (30 s).
HEALTH_START_TIMEOUT = 30.0
CHILD_STOP_TIMEOUT = 5.0
RESTART_BACKOFF_FIRST = 0.5  # seconds before the first restart; doubled for each one after
RESTART_BACKOFF_MAX = 30.0
RESTART_BACKOFF_RESET = 60.0  # a server that ran this long starts the backoff afresh


class Spawn(Protocol):
    """Starts a child (Popen options passed through); where its stdout/stderr go is the spawner's choice."""

    def __call__(
        self, argv: Sequence[str], **popen_options: Any
    ) -> Awaitable[subprocess.Popen[bytes]]: ...


class HealthError(Exception):
    """The health server cannot run; the message says why and what to do."""


class HealthBindError(HealthError):
    """The health server cannot bind HEALTH_PORT (taken, not permitted): retrying will not help."""


def proxy_address(config: ActiveConfig, settings: Settings) -> tuple[str, int]:
    """Where the health checks look for the proxy: the config's first http_port, else its first https_port."""
    ports = config.http_ports or [
        parse_listen_address(d) for d in config.named("https_port") if d.args
    ]
    if not ports:
        return "127.0.0.1", settings.squid_port
    first = ports[0]
    return (first.host or "127.0.0.1"), first.port


# http_port options under which a plain request from the scrape is refused, and Squid logs it at
# every report: intercepted connections only (two ERROR lines: NAT lookup failed), or a PROXY
# protocol header first (a WARNING).
_NOT_PLAIN = frozenset({"intercept", "transparent", "tproxy", "require-proxy-header"})


def manager_address(config: ActiveConfig, settings: Settings) -> tuple[str, int] | None:
    """Where /metrics asks Squid's cache manager: the first http_port that takes plain forward-proxy
    requests (not intercept/tproxy/require-proxy-header); None when there is none (only https_port or intercepting
    ports: a plain request there fails, and Squid logs an ERROR for each one)."""
    for directive in config.named("http_port"):
        if directive.args and not _NOT_PLAIN.intersection(a.lower() for a in directive.args[1:]):
            address = parse_listen_address(directive)
            return (address.host or "127.0.0.1"), address.port
    if config.named("http_port") or config.named("https_port"):
        return None
    return proxy_address(config, settings)


def health_environment() -> dict[str, str]:
    """Our environment with the package's parent dir first on PYTHONPATH."""
    package_parent = str(Path(entrypoint.__file__).resolve().parent.parent)
    environment = dict(os.environ)
    existing = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = package_parent + (os.pathsep + existing if existing else "")
    return environment


class HealthProcess:
    """One health server child at a time; `keep_alive` on every monitoring tick restarts a dead one."""

    def __init__(
        self, settings: Settings, children: ChildProcesses, log: logging.Logger, spawn: Spawn
    ) -> None:
        self.settings = settings
        self.port = settings.health_port
        self.children = children
        self.log = log
        self._spawn = spawn
        self.environment = health_environment()
        self.argv: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0  # every restart after a death since the entrypoint started
        self.backoff = RESTART_BACKOFF_FIRST
        # The start, a restart or a re-targeting in progress (its outcome is read once).
        self._pending: asyncio.Task[None] | None = None

    def argv_for(self, config: ActiveConfig) -> list[str]:
        """The command line (run by module name: source tree, Bazel runfiles and image alike)."""
        settings = self.settings
        proxy_host, proxy_port = proxy_address(config, settings)
        cache_dirs = [d.path for d in config.disk_cache_dirs] or [settings.spool_dir]
        argv = [
            sys.executable,
            "-P",
            "-m",
            "entrypoint.healthcheck_cli",
            "--port",
            str(self.port),
            "--pid-file",
            str(config.pid_file),
            "--squid-comm",
            settings.squid_bin.name,
            "--proxy-host",
            proxy_host,
            "--proxy-port",
            str(proxy_port),
            "--config",
            str(config.path),
            "--log-level",
            settings.log_level,
            "--metrics",
            "on" if settings.metrics else "off",
        ]
        if settings.metrics:
            manager = manager_address(config, settings)
            argv += (
                ["--manager-host", manager[0], "--manager-port", str(manager[1])]
                if manager is not None
                else ["--no-manager"]
            )
            argv += [
                "--metrics-state",
                str(settings.run_dir / STATE_FILE_NAME),
                "--config-source",
                str(config.source),
            ]
        for cache_dir in cache_dirs:
            argv += ["--cache-dir", str(cache_dir)]
        return argv

    # -- start -------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """Whether `start` has been called (the startup spawns it once, at one of two points)."""
        return bool(self.argv)

    def start(self, config: ActiveConfig) -> None:
        """Spawn it now; its report is awaited by `wait_listening` (the startup goes on meanwhile)."""
        self.argv = self.argv_for(config)
        self.log.info("Starting health server on port %d", self.port, extra={"port": self.port})
        self._pending = asyncio.ensure_future(self._launch())

    async def wait_listening(self) -> None:
        """The started server's report: returns once it listens, else HealthError (a silent one was killed)."""
        pending, self._pending = self._pending, None
        assert pending is not None, "start() first"
        await pending

    def start_failed(self) -> bool:
        """Whether the start has already ended without listening (`wait_listening` would raise at once)."""
        pending = self._pending
        return (
            pending is not None
            and pending.done()
            and (pending.cancelled() or pending.exception() is not None)
        )

    async def _launch(self) -> None:
        """Spawn and wait (HEALTH_START_TIMEOUT) for its own report that it listens; else HealthError."""
        read_fd, write_fd = os.pipe()
        try:
            os.set_blocking(read_fd, False)
            try:
                self.process = await self._spawn(
                    [*self.argv, "--ready-fd", str(write_fd)],
                    what="the health server",
                    stdin=subprocess.DEVNULL,
                    env=self.environment,
                    cwd="/",
                    process_group=0,
                    pass_fds=(write_fd,),
                )
            except ForkError as error:
                raise HealthError(str(error)) from None
            finally:
                os.close(write_fd)  # the child's copy is the only one left: EOF when it dies
            self.started_at = time.monotonic()
            report = await self._read_report(read_fd, HEALTH_START_TIMEOUT)
        finally:
            os.close(read_fd)
        await self._judge(report)

    async def _read_report(self, read_fd: int, timeout: float) -> bytes | None:
        """The child's first line, b"" when it closed the pipe without one, None on timeout."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bytes] = loop.create_future()
        received = bytearray()

        def readable() -> None:
            try:
                chunk = os.read(read_fd, 512)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            received.extend(chunk)
            if (not chunk or b"\n" in received) and not done.done():
                done.set_result(bytes(received).split(b"\n", 1)[0] if b"\n" in received else b"")

        loop.add_reader(read_fd, readable)
        try:
            return await asyncio.wait_for(done, timeout)
        except TimeoutError:
            return None
        finally:
            loop.remove_reader(read_fd)

    async def _judge(self, report: bytes | None) -> None:
        process = self.process
        assert process is not None
        words = (report or b"").decode("utf-8", errors="replace").split(" ", 2)
        if words[0] == "listening":
            return
        if report is None:
            self.children.kill_group(process)
            await self.children.wait(process, CHILD_STOP_TIMEOUT)
            raise HealthError(
                f"Health server did not report listening on HEALTH_PORT {self.port} within"
                f" {HEALTH_START_TIMEOUT:g} s (it was killed)"
            )
        code = await self.children.wait(process, CHILD_STOP_TIMEOUT)
        if words[0] == "error" and len(words) > 1 and words[1] == "EADDRINUSE":
            raise HealthBindError(
                f"HEALTH_PORT {self.port} is already in use: another process listens there;"
                " stop it or set HEALTH_PORT to a free port"
            )
        if words[0] == "error":
            detail = words[2] if len(words) > 2 else words[1] if len(words) > 1 else "unknown error"
            raise HealthBindError(
                f"Health server cannot listen on HEALTH_PORT {self.port}: {detail}"
            )
        if code is None:  # it lingers without having said it listens: never taken for listening
            self.children.kill_group(process)
            await self.children.wait(process, CHILD_STOP_TIMEOUT)
            what = "closed its report pipe" if not report else f"reported {report[:80]!r}"
            raise HealthError(
                f"Health server {what} without listening on HEALTH_PORT {self.port} (it was killed)"
            )
        raise HealthError(
            f"Health server exited during startup ({describe_exit(code)}); see its messages above"
        )

    # -- running -----------------------------------------------------------------------
    def keep_alive(self) -> None:
        """On every monitoring tick: schedule a restart of a dead server; HealthError once one failed for good."""
        pending = self._pending
        if pending is not None:
            if not pending.done():
                return
            self._pending = None
            pending.result()  # raises the HealthError of a restart that cannot bind
            return
        process = self.process
        if process is None:
            return
        code = self.children.returncode(process)
        if code is None:
            return
        if time.monotonic() - self.started_at >= RESTART_BACKOFF_RESET:
            self.backoff = RESTART_BACKOFF_FIRST
        self._pending = asyncio.ensure_future(
            self._relaunch(f"exited unexpectedly ({describe_exit(code)})")
        )

    async def follow(self, config: ActiveConfig) -> None:
        """After a reload: restart it (same handshake) when what it checks (ports, pid file, dirs) changed."""
        argv = self.argv_for(config)
        if argv == self.argv:
            return
        self.log.info("Health server follows the new config (restarting it)")
        await self.stop()
        self.argv = argv
        self._pending = asyncio.ensure_future(self._relaunch(None))

    async def _relaunch(self, what: str | None) -> None:
        """Spawn until one listens, backing off before each attempt after a death (`what`) or a failure.

        A bind failure is final (HealthBindError, which `keep_alive` raises to end the container).
        """
        restart = 0
        while True:
            if what is not None:
                self.restarts += 1
                restart = self.restarts
                delay, self.backoff = self.backoff, min(self.backoff * 2, RESTART_BACKOFF_MAX)
                self.log.error(
                    "Health server %s; restart %d in %g s",
                    what,
                    restart,
                    delay,
                    extra={"restart": restart},
                )
                await asyncio.sleep(delay)
            try:
                await self._launch()
            except HealthBindError as error:
                raise HealthBindError(f"Health server cannot be restarted: {error}") from None
            except (HealthError, OSError) as error:  # OSError: fork/exec failed (EAGAIN, ENOMEM)
                what = f"restart failed: {error}"
                continue
            if restart:
                self.log.info(
                    "Health server restarted (restart %d), listening on port %d",
                    restart,
                    self.port,
                    extra={"restart": restart, "port": self.port},
                )
            return

    # -- stopping ----------------------------------------------------------------------
    async def stop(self) -> None:
        """SIGTERM, then SIGKILL of its group after CHILD_STOP_TIMEOUT; a pending start or restart is cancelled."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
            try:
                await pending
            except (asyncio.CancelledError, HealthError, OSError):
                pass
        process = self.process
        if process is None or self.children.returncode(process) is not None:
            return
        self.children.signal(process, signal.SIGTERM)
        if await self.children.wait(process, CHILD_STOP_TIMEOUT) is None:
            self.children.kill_group(process)
            await self.children.wait(process, CHILD_STOP_TIMEOUT)
