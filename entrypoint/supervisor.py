"""PID 1's lifecycle, composed: signals, startup, readiness, monitoring, reload, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from entrypoint import log_json, monitor, reload, shutdown, watch
from entrypoint.head_start import HeadStart
from entrypoint.health_process import HealthError, HealthProcess
from entrypoint.log_relay import LineRender, relayed_spawn
from entrypoint.log_text import escape_controls, safe_line
from entrypoint.metrics_state import STATE_FILE_NAME, EntrypointMetrics
from entrypoint.output_sink import OutputSink
from entrypoint.processes import ChildProcesses, kill_descendants_now
from entrypoint.settings import Settings
from entrypoint.signals import SignalRouter, signal_name
from entrypoint.squid_process import SquidCommands
from entrypoint.startup import StartupError, start_up
from entrypoint.state import ProxyState

FATAL_FLUSH_TIMEOUT = 0.5


def entrypoint_metrics(state: ProxyState) -> EntrypointMetrics:
    """PID 1's figures, published to the run dir for the health server (METRICS=off: not at all)."""
    settings = state.settings
    metrics = EntrypointMetrics(settings.run_dir / STATE_FILE_NAME if settings.metrics else None)
    metrics.sources = {
        "health_server_restarts": lambda: state.health.restarts,
        "log_lines_dropped_stdout": lambda: state.sinks[0].dropped_total,
        "log_lines_dropped_stderr": lambda: state.sinks[1].dropped_total,
        "config_check_duration_seconds": lambda: state.commands.last_check_seconds,
    }
    return metrics


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        log: logging.Logger,
        sinks: tuple[OutputSink, OutputSink],
        head: HeadStart | None = None,
    ) -> None:
        children = ChildProcesses(log)
        commands = SquidCommands(settings.squid_bin, children, log)
        health_render: LineRender = safe_line
        if settings.log_format == "json":  # children's lines become JSON objects too
            commands.renders = (log_json.render_access, log_json.render_cache_log)
            health_render = log_json.render_health
        self.state = ProxyState(
            settings=settings,
            log=log,
            children=children,
            commands=commands,
            health=HealthProcess(
                settings, children, log, relayed_spawn(children, sinks, health_render)
            ),
            sinks=sinks,  # every relayed line is redacted and escaped (log_relay)
        )
        self.state.metrics = entrypoint_metrics(self.state)
        self.log = log
        self.signals = SignalRouter(log, on_reload=self.request_reload, on_fatal=self.fatal)
        self.reloads = reload.Serializer(self.reload)
        self.ready = False
        self.reload_when_ready = False
        # When the startup (or head_start) or the last reload began reading the config.
        self.config_read_at = time.time_ns() if head is None else head.read_at_ns
        self.head = head  # the config check begun before the imports: adopted by the startup
        self.watcher = watch.Watcher(
            settings,
            lambda: self.state.config,
            lambda: self.config_read_at,
            self.on_watched_change,
            self.warn,
            lambda: self.state.attempted_paths,
        )

    async def reload(self) -> None:
        self.config_read_at = time.time_ns()
        await reload.reload_config(self.state)

    def request_reload(self) -> None:
        if self.signals.shutdown_requested.is_set():
            self.log.warning("Received signal SIGHUP while stopping; ignored")
        elif not self.ready:
            self.log.info("Received signal SIGHUP during startup; reloading once Squid is ready")
            self.reload_when_ready = True
        else:
            self.log.info("Received signal SIGHUP, reloading the config...")
            self.reloads.request()

    def on_watched_change(self, paths: list[str]) -> None:
        """Watch mode saw a settled change: exactly what a SIGHUP does."""
        shown = ", ".join(escape_controls(path) for path in paths[:3]) + (
            f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        )
        if self.signals.shutdown_requested.is_set():
            return
        if not self.ready:
            self.log.info("Watch: %s changed during startup; reloading once Squid is ready", shown)
            self.reload_when_ready = True
        else:
            self.log.info("Watch: %s changed; reloading the config...", shown)
            self.reloads.request()

    def warn(self, message: str) -> None:
        self.log.warning("%s", escape_controls(message))

    def start_watching(self) -> None:
        """CONFIG_RELOAD=watch: the polling thread, from before the config is read (a change
        during startup is reloaded once ready); the single-file mounts are told either way."""
        settings = self.state.settings
        for path in watch.single_file_mounts(
            [settings.config, settings.tls_cert, settings.tls_key]
        ):
            self.warn(watch.single_file_warning(path))
        if settings.config_reload != "watch":
            self.log.info(
                "CONFIG_RELOAD=signal: the config and TLS secret are reloaded on SIGHUP only"
            )
            return
        try:
            self.watcher.start(asyncio.get_running_loop())
        except RuntimeError:
            self.log.error(
                "Watch mode is off: no thread could be started (RLIMIT_NPROC / pids.max); send SIGHUP to reload"
            )
            return
        self.log.info(
            "CONFIG_RELOAD=watch: reloading when %s, its includes or the TLS secret change (checked every %g s)",
            escape_controls(str(settings.config)),
            settings.watch_interval,
        )

    def fatal(self, signum: int) -> None:
        """A signal that would end us without cleanup: stop every descendant, then die of it."""
        self.log.error(
            "Received signal %s; stopping Squid, the health server and every other child now",
            signal_name(signum),
        )
        kill_descendants_now()
        for sink in self.state.sinks:
            sink.flush_for(FATAL_FLUSH_TIMEOUT)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    async def shut_down(self) -> None:
        self.watcher.stop()
        self.reloads.cancel()
        await shutdown.stop_squid(self.state, self.signals.force)
        await shutdown.stop_everything(self.state)
        self.log.info("Shutdown complete")

    async def run(self, pending_signals: list[int]) -> int:
        try:
            return await self._run(pending_signals)
        finally:
            self.watcher.stop()

    async def _run(self, pending_signals: list[int]) -> int:
        self.state.children.install()
        if self.head is not None:  # before the first reap, which would take it for an orphan
            self.state.children.adopt(self.head.parse)
        startup = asyncio.ensure_future(start_up(self.state, self.head))

        def cancel_startup() -> None:
            startup.cancel()

        self.signals.listeners.append(cancel_startup)
        self.signals.install(pending_signals)
        self.start_watching()
        try:
            await startup
        except asyncio.CancelledError:
            self.log.info("Startup aborted by signal; stopping what was started")
            await self.shut_down()
            return 0
        except StartupError as error:
            self.log.error("%s", error)
            await shutdown.stop_everything(self.state)
            return 1
        except Exception:
            self.log.exception("Unexpected error during startup")
            await shutdown.stop_everything(self.state)
            return 1
        self.ready = True
        self.state.metrics.publish(
            self.log
        )  # at once: the monitor's ticks publish changes from now on
        self.log.info("Container ready, entering monitoring loop")
        if self.reload_when_ready:
            self.reloads.request()
        try:
            reason = await monitor.watch(self.state, self.signals.shutdown_requested)
        except HealthError as error:  # a restart that cannot bind HEALTH_PORT: no probe can pass
            self.log.error("%s; stopping", error)
        else:
            if reason is None:
                await self.shut_down()
                return 0
            squid = self.state.squid
            how = (
                log_json.exit_fields(squid.exited.result())
                if squid is not None and squid.exited.done()
                else {}
            )
            self.log.error(
                "Squid process died unexpectedly (%s)", reason, extra={"reason": reason, **how}
            )
        self.reloads.cancel()
        await shutdown.stop_everything(self.state)
        return 1
