"""The PID 1 lifecycle: ordered startup, asyncio monitoring loop, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Callable

from entrypoint import runtime_dirs, squid_config, tls
from entrypoint.health_process import HealthError, HealthProcess, health_argv
from entrypoint.processes import ChildProcesses, describe_exit
from entrypoint.settings import Settings
from entrypoint.squid_config import ActiveConfig
from entrypoint.squid_process import SquidCommands, SquidError, SquidProcess, is_live_process

MONITOR_INTERVAL = 0.5
CHILD_STOP_TIMEOUT = 5.0
PROXY_ACCEPT_TIMEOUT = 30.0


class StartupError(Exception):
    """Startup cannot continue; the message is logged as the reason for exit 1."""


class Supervisor:
    def __init__(self, settings: Settings, log: logging.Logger) -> None:
        self.settings = settings
        self.log = log
        self.children = ChildProcesses(log)
        self.squid_commands = SquidCommands(settings.squid_bin, self.children, log)
        self.config: ActiveConfig | None = None
        self.squid: SquidProcess | None = None
        self.squid_pid: int | None = None
        self.health: HealthProcess | None = None
        self.signals_received = 0
        self.shutdown_requested = asyncio.Event()
        self.force_kill = asyncio.Event()
        self.startup_task: asyncio.Task[None] | None = None
        self.ready = False
        self.phase_started = time.monotonic()

    # -- signals -----------------------------------------------------------------------
    def install_signal_handlers(self, pending: list[int]) -> None:
        loop = asyncio.get_running_loop()
        self.children.install()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self.on_signal, signum)
        for signum in pending:  # arrived before the event loop took over
            self.on_signal(signum)

    def on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            if self.ready and not self.shutdown_requested.is_set():
                self.log.info("Received signal SIGHUP, reconfiguring Squid...")
                asyncio.get_running_loop().create_task(self.reconfigure())
            else:
                self.log.warning("Received signal SIGHUP while Squid is starting or stopping; ignored")
            return
        self.signals_received += 1
        if self.signals_received == 1:
            self.log.info("Received signal %s, initiating graceful shutdown...", name)
            self.shutdown_requested.set()
            if self.startup_task is not None and not self.startup_task.done():
                self.startup_task.cancel()
        else:
            self.log.warning("Received signal %s again, killing Squid now", name)
            self.force_kill.set()

    # -- startup -----------------------------------------------------------------------
    def _phase_done(self, name: str) -> None:
        now = time.monotonic()
        self.log.debug("Phase %s took %.3f s", name, now - self.phase_started)
        self.phase_started = now

    async def start_up(self) -> None:
        settings = self.settings
        self.phase_started = time.monotonic()

        try:
            config = squid_config.select_config(settings)
        except squid_config.ConfigError as error:
            raise StartupError(str(error)) from None
        self.config = config
        if config.is_custom:
            self.log.info("Using custom Squid config %s", config.source)
            ports = [address.port for address in config.http_ports]
            if settings.squid_port not in ports:
                self.log.warning(
                    "SQUID_PORT=%d does not match the custom config's http_port %s;"
                    " Squid listens where the config says",
                    settings.squid_port,
                    ", ".join(str(p) for p in ports) or "(none)",
                )
        else:
            self.log.info(
                "No custom config at %s; using the packaged default %s (http_port %d)",
                settings.config, config.source, settings.squid_port,
            )
        pid_file = config.pid_file
        if pid_file is None:
            raise StartupError(
                f"Squid config {config.source} sets no pid_filename: add"
                f" 'pid_filename {settings.run_dir}/squid.pid' (the entrypoint and the health"
                " checks need to know where Squid writes its pid)"
            )
        self._phase_done("config_selection")

        ca_material: tuple[bytes, bytes] | None = None
        if config.uses_ssl_bump:
            self.log.info("SSL-bump configured; validating CA %s and %s", settings.tls_cert, settings.tls_key)
            try:
                ca_material = tls.validate_ca_pair(settings.tls_cert, settings.tls_key, settings.tls_dir)
            except tls.TlsError as error:
                raise StartupError(str(error)) from None
        self._phase_done("tls_validation")

        dirs = list(settings.runtime_dirs) + [pid_file.parent]
        dirs += [cache_dir.path for cache_dir in config.disk_cache_dirs]
        try:
            runtime_dirs.prepare_runtime_dirs(dirs)
            squid_config.write_rendered(config)
        except (runtime_dirs.RuntimeDirError, squid_config.ConfigError) as error:
            raise StartupError(str(error)) from None
        self.log.info("Runtime directories are writable: %s", ", ".join(str(d) for d in dict.fromkeys(dirs)))
        self._phase_done("runtime_dirs")

        if ca_material is not None:
            try:
                tls.merge_ca_pem(*ca_material, settings.merged_ca_pem)
                self.log.info("Merged CA certificate and key into %s (mode 0600)", settings.merged_ca_pem)
                for db in config.cert_dbs(settings.default_ssl_db):
                    await tls.ensure_cert_db(self.children, settings.certgen_bin, db, self.log)
            except OSError as error:
                raise StartupError(f"cannot write {settings.merged_ca_pem}: {error.strerror}") from None
            except tls.TlsError as error:
                raise StartupError(str(error)) from None
        self._phase_done("tls_setup")

        self.log.info("Checking Squid config %s", config.path)
        try:
            await self.squid_commands.check_config(config)
        except SquidError as error:
            raise StartupError(str(error)) from None
        self._phase_done("config_check")

        try:
            await self.squid_commands.initialise_cache(config)
        except SquidError as error:
            raise StartupError(str(error)) from None
        self._phase_done("cache_init")

        proxy_host, proxy_port = self._proxy_address(config)
        await self.start_health_server(config, pid_file, proxy_host, proxy_port)
        self._phase_done("health_server")

        self.log.info("Starting Squid proxy...")
        self.squid = await self.squid_commands.start(config)
        try:
            self.squid_pid = await self.squid_commands.wait_until_running(self.squid, pid_file)
        except SquidError as error:
            raise StartupError(str(error)) from None
        self.log.info("Squid started with PID %d", self.squid_pid)
        self._phase_done("squid_start")

        # The pid file comes from the master before its worker listens: wait for the port
        # so "ready" means serving (and a stop request is not racing the worker's start).
        squid = self.squid

        def squid_exit() -> str | None:
            if not squid.exited.done():
                return None
            return f"Squid exited during startup ({describe_exit(squid.exited.result())}); see its messages above"

        if not await self._wait_until_accepting(proxy_host, proxy_port, PROXY_ACCEPT_TIMEOUT, squid_exit):
            self.log.warning(
                "Squid does not accept connections on %s:%d after %g s; /ready will report it",
                proxy_host, proxy_port, PROXY_ACCEPT_TIMEOUT,
            )
        self._phase_done("squid_listening")

    def _proxy_address(self, config: ActiveConfig) -> tuple[str, int]:
        ports = config.http_ports
        if not ports:
            return "127.0.0.1", self.settings.squid_port
        first = ports[0]
        return (first.host or "127.0.0.1"), first.port

    async def start_health_server(
        self, config: ActiveConfig, pid_file: Path, proxy_host: str, proxy_port: int
    ) -> None:
        settings = self.settings
        cache_dirs = [d.path for d in config.disk_cache_dirs] or [settings.spool_dir]
        argv = health_argv(settings, config.path, pid_file, proxy_host, proxy_port, cache_dirs)
        self.log.info("Starting health server on port %d", settings.health_port)
        self.health = HealthProcess(self.children, self.log, settings.health_port, argv)
        try:
            await self.health.start()
        except HealthError as error:
            raise StartupError(str(error)) from None

    async def _wait_until_accepting(
        self, host: str, port: int, timeout: float, child_exit: Callable[[], str | None]
    ) -> bool:
        """Polls host:port until it accepts (True) or `timeout` passes (False).

        Raises StartupError with child_exit()'s message if the child that should
        be listening exits first: no point waiting for a dead process.
        """
        deadline = time.monotonic() + timeout
        while not await self._port_accepts(port, host):
            reason = child_exit()
            if reason is not None:
                raise StartupError(reason)
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    @staticmethod
    async def _port_accepts(port: int, host: str = "127.0.0.1") -> bool:
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

    # -- running -----------------------------------------------------------------------
    async def reconfigure(self) -> None:
        if self.squid is None or self.config is None:
            return
        try:
            await self.squid_commands.reconfigure(self.squid, self.config)
        except SquidError as error:
            self.log.error("Reconfigure skipped, Squid keeps its current config: %s", error)
            return
        self.log.info("Squid reconfigured (PID %d kept)", self.squid_pid or self.squid.pid)

    async def monitor(self) -> int:
        assert self.squid is not None
        squid_exit = self.squid.exited
        shutdown = asyncio.ensure_future(self.shutdown_requested.wait())
        try:
            while True:
                await asyncio.wait({squid_exit, shutdown}, timeout=MONITOR_INTERVAL, return_when=asyncio.FIRST_COMPLETED)
                self.children.reap()
                if self.shutdown_requested.is_set():
                    await self.shut_down()
                    return 0
                if squid_exit.done() or not self._squid_alive():
                    code = squid_exit.result() if squid_exit.done() else None
                    what = describe_exit(code) if code is not None else "process vanished"
                    self.log.error("Squid process died unexpectedly (%s)", what)
                    await self.stop_everything_now()
                    return 1
                if self.health is not None:
                    try:
                        self.health.keep_alive()
                    except HealthError as error:
                        self.log.error("%s; stopping", error)
                        await self.stop_everything_now()
                        return 1
        finally:
            shutdown.cancel()

    def _squid_alive(self) -> bool:
        pid = self.squid_pid or (self.squid.pid if self.squid else None)
        return pid is not None and is_live_process(pid, self.squid_commands.comm)

    # -- stopping ----------------------------------------------------------------------
    async def shut_down(self) -> None:
        """Graceful: SIGTERM Squid, wait up to SHUTDOWN_TIMEOUT (or a second signal), then kill."""
        squid = self.squid
        if squid is not None and not squid.exited.done():
            squid.request_graceful_stop()
            force = asyncio.ensure_future(self.force_kill.wait())
            try:
                await asyncio.wait(
                    {squid.exited, force},
                    timeout=self.settings.shutdown_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                force.cancel()
            if not squid.exited.done():
                if not self.force_kill.is_set():
                    self.log.warning(
                        "Squid did not stop within %g s (SHUTDOWN_TIMEOUT); killing it",
                        self.settings.shutdown_timeout,
                    )
            else:
                self.log.info("Squid stopped (%s)", describe_exit(squid.exited.result()))
        await self.stop_everything_now()
        self.log.info("Shutdown complete")

    async def stop_everything_now(self) -> None:
        """SIGKILL what is left of Squid's group, stop the health server, reap everything."""
        squid = self.squid
        if squid is not None:
            squid.kill_all()
            await self.children.wait(squid.process, CHILD_STOP_TIMEOUT)
        if self.health is not None:
            await self.health.stop()
        if squid is not None:
            await squid.drain_output(2.0)
        self.children.reap()

    async def run(self, pending_signals: list[int]) -> int:
        self.install_signal_handlers(pending_signals)
        self.startup_task = asyncio.ensure_future(self.start_up())
        try:
            if self.shutdown_requested.is_set():
                self.startup_task.cancel()
            await self.startup_task
        except asyncio.CancelledError:
            self.log.info("Startup aborted by signal; stopping what was started")
            await self.shut_down()
            return 0
        except StartupError as error:
            self.log.error("%s", error)
            await self.stop_everything_now()
            return 1
        except Exception:
            self.log.exception("Unexpected error during startup")
            await self.stop_everything_now()
            return 1
        self.ready = True
        self.log.info("Container ready, entering monitoring loop")
        return await self.monitor()
