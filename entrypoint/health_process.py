"""The health server as PID 1's child: spawn it, prove it is the one listening, restart it with backoff, stop it.

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
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import entrypoint
from entrypoint.processes import ChildProcesses, describe_exit
from entrypoint.settings import Settings

HEALTH_START_TIMEOUT = 5.0  # spawn -> "listening" report, each start and restart
CHILD_STOP_TIMEOUT = 5.0
RESTART_BACKOFF_FIRST = 0.5  # seconds before the first restart; doubled for each one after
RESTART_BACKOFF_MAX = 30.0
RESTART_BACKOFF_RESET = 60.0  # a server that ran this long starts the backoff afresh

Spawner = Callable[[Sequence[str], tuple[int, ...]], Awaitable[subprocess.Popen[bytes]]]


class HealthError(Exception):
    """The health server cannot run; the message says why and what to do."""


class HealthBindError(HealthError):
    """The health server cannot bind HEALTH_PORT (taken, not permitted): retrying will not help."""


def health_argv(
    settings: Settings, config: Path, pid_file: Path, proxy_host: str, proxy_port: int, cache_dirs: Sequence[Path]
) -> list[str]:
    """The health server's command line (run by module name: source tree, Bazel runfiles and image alike)."""
    argv = [
        sys.executable, "-P", "-m", "entrypoint.healthcheck_cli",
        "--port", str(settings.health_port),
        "--pid-file", str(pid_file),
        "--squid-comm", settings.squid_bin.name,
        "--proxy-host", proxy_host,
        "--proxy-port", str(proxy_port),
        "--config", str(config),
        "--log-level", settings.log_level,
    ]
    for cache_dir in cache_dirs:
        argv += ["--cache-dir", str(cache_dir)]
    return argv


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
        self,
        children: ChildProcesses,
        log: logging.Logger,
        port: int,
        argv: Sequence[str],
        spawn: Spawner | None = None,
    ) -> None:
        self.children = children
        self.log = log
        self.port = port
        self.argv = list(argv)
        self.environment = health_environment()
        self._spawn = spawn or self._default_spawn
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0  # every restart since the entrypoint started
        self.backoff = RESTART_BACKOFF_FIRST
        self._restart: asyncio.Task[None] | None = None

    async def _default_spawn(self, argv: Sequence[str], pass_fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
        return self.children.spawn(
            argv, stdin=subprocess.DEVNULL, env=self.environment, cwd="/", process_group=0, pass_fds=pass_fds,
        )

    # -- start -------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn it and wait (HEALTH_START_TIMEOUT) for its own report that it listens; else HealthError."""
        read_fd, write_fd = os.pipe()
        try:
            os.set_blocking(read_fd, False)
            try:
                self.process = await self._spawn([*self.argv, "--ready-fd", str(write_fd)], (write_fd,))
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
        except asyncio.TimeoutError:
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
            raise HealthBindError(f"Health server cannot listen on HEALTH_PORT {self.port}: {detail}")
        what = describe_exit(code) if code is not None else "closed its report pipe"
        raise HealthError(f"Health server exited during startup ({what}); see its messages above")

    # -- running -----------------------------------------------------------------------
    def keep_alive(self) -> None:
        """On every monitoring tick: schedule a restart of a dead server; HealthError once one failed for good."""
        restart = self._restart
        if restart is not None:
            if not restart.done():
                return
            self._restart = None
            restart.result()  # raises the HealthError of a restart that cannot bind
            return
        process = self.process
        if process is None:
            return
        code = self.children.returncode(process)
        if code is None:
            return
        if time.monotonic() - self.started_at >= RESTART_BACKOFF_RESET:
            self.backoff = RESTART_BACKOFF_FIRST
        self._restart = asyncio.ensure_future(self._restart_after(f"exited unexpectedly ({describe_exit(code)})"))

    async def _restart_after(self, what: str) -> None:
        """Restart with exponential backoff until one listens; a bind failure ends it (HealthBindError)."""
        while True:
            self.restarts += 1
            delay, self.backoff = self.backoff, min(self.backoff * 2, RESTART_BACKOFF_MAX)
            self.log.error("Health server %s; restart %d in %g s", what, self.restarts, delay)
            await asyncio.sleep(delay)
            try:
                await self.start()
            except HealthBindError as error:
                raise HealthBindError(f"Health server cannot be restarted: {error}") from None
            except (HealthError, OSError) as error:  # OSError: fork/exec failed (EAGAIN, ENOMEM)
                what = f"restart failed: {error}"
                continue
            self.log.info("Health server restarted (restart %d), listening on port %d", self.restarts, self.port)
            return

    # -- stopping ----------------------------------------------------------------------
    async def stop(self) -> None:
        """SIGTERM, then SIGKILL of its group after CHILD_STOP_TIMEOUT; a pending restart is cancelled."""
        if self._restart is not None:
            self._restart.cancel()
            try:
                await self._restart
            except (asyncio.CancelledError, HealthError):
                pass
            self._restart = None
        process = self.process
        if process is None or self.children.returncode(process) is not None:
            return
        self.children.signal(process, signal.SIGTERM)
        if await self.children.wait(process, CHILD_STOP_TIMEOUT) is None:
            self.children.kill_group(process)
            await self.children.wait(process, CHILD_STOP_TIMEOUT)
