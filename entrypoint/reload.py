"""SIGHUP: re-derive everything from the config, serialized, keeping the running Squid on any error.

Order: re-read the config (a worker thread: the event loop keeps relaying and handling
signals), refuse what needs a restart (another config, another pid_filename, a cache_dir's
other type or L1/L2) or cannot work (a new port held by another process or privileged),
re-validate the TLS secret, snapshot the config into the run dir and `squid -k parse` the
snapshot, make a new disk cache_dir as startup does (`squid -z`), merge the TLS secret atomically, make the
snapshot the file Squid reads, point the health server at the new ports, then
`squid -k reconfigure` (SIGHUP to the master). Any failure before that leaves Squid, its
config file and what the health server checks as they were; so does an unexpected error
(logged in one line, its traceback at DEBUG). At most one reload runs; SIGHUPs meanwhile
collapse into one pending reload.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from entrypoint import config_snapshot, proc_table, runtime_dirs, squid_user, watch
from entrypoint.config_steps import (
    activate_snapshot,
    install_tls,
    read_config,
    recheck_cert_dbs,
    validate_tls,
    write_snapshot,
)
from entrypoint.log_text import escape_controls
from entrypoint.squid_config import DISK_CACHE_TYPES, ActiveConfig, ConfigError, write_atomically
from entrypoint.squid_process import (
    SquidError,
    SquidProcess,
    foreign_listeners,
    listen_ports,
    privileged_port_problem,
)
from entrypoint.state import ProxyState

UNEXPECTED_MESSAGE_LIMIT = 300


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


def refuse_restart_changes(config: ActiveConfig, old: ActiveConfig) -> None:
    """What Squid cannot take on a reconfigure: ConfigError saying a restart is needed."""
    if config.source != old.source:
        kind = {True: "mounted config", False: "packaged default"}
        raise ConfigError(
            f"the config changed from the {kind[old.is_custom]} {old.source} to the"
            f" {kind[config.is_custom]} {config.source}: switching needs a restart (restart the container)"
        )
    if config.pid_file != old.pid_file:
        raise ConfigError(
            f"pid_filename changed from {old.pid_file} to {config.pid_file}: Squid keeps writing"
            f" {old.pid_file} until it is restarted, so this needs a restart (restart the container)"
        )
    before = cache_dir_layouts(old)
    for path, layout in cache_dir_layouts(config).items():
        if path in before and before[path] != layout:
            raise ConfigError(
                f"cache_dir {path} changed from {' '.join(before[path])} to {' '.join(layout)}: Squid cannot"
                " change a cache_dir's type or L1/L2 on a reconfigure, so this needs a restart (restart the container)"
            )


def cache_dir_layouts(config: ActiveConfig) -> dict[Path, tuple[str, ...]]:
    """Each disk cache_dir's type and, for the ufs family, its L1 and L2 (what -z lays out)."""
    layouts: dict[Path, tuple[str, ...]] = {}
    for directive in config.named("cache_dir"):
        args = directive.args
        if len(args) >= 2 and args[0] in DISK_CACHE_TYPES:
            layouts[Path(args[1])] = (args[0],) if args[0] == "rock" else (args[0], *args[3:5])
    return layouts


async def prepare_new_cache_dirs(
    state: ProxyState, config: ActiveConfig, old: ActiveConfig, snapshot: Path
) -> None:
    """A cache_dir the running Squid does not have, made as at startup: dirs, probe, `squid -z` (Squid's reconfigure never runs -z)."""
    known = {cache_dir.path for cache_dir in old.disk_cache_dirs}
    added = [cache_dir.path for cache_dir in config.disk_cache_dirs if cache_dir.path not in known]
    if not added:
        return
    try:
        runtime_dirs.prepare_runtime_dirs(added)
    except runtime_dirs.RuntimeDirError as error:
        raise ConfigError(str(error)) from None
    if state.commands.stdio_owner is not None:
        squid_user.hand_over(added, state.commands.stdio_owner)
    # -z refuses to run beside a Squid that holds the pid file: it runs without one.
    variant = snapshot.with_name(snapshot.name + ".cache-init")
    write_atomically(variant, snapshot.read_bytes() + b"\npid_filename none\n", 0o640)
    try:
        await state.commands.initialise_cache(config, variant)
    finally:
        variant.unlink(missing_ok=True)


def taken_ports(config: ActiveConfig, old: ActiveConfig, squid: SquidProcess) -> list[int]:
    """The config's ports another process listens on (Squid would fail to open them and die)."""
    ports = listen_ports(config)
    if all(proc_table.fds_readable(pid) for pid in squid.tree()):
        return sorted({sock.local_port for sock in foreign_listeners(ports, squid.pid)})
    # Squid's kids (another UID) cannot be looked into: any listener on a port Squid was not
    # configured for is someone else's.
    added = set(ports) - set(listen_ports(old))
    return sorted({sock.local_port for sock in proc_table.sockets_on(added, proc_table.TCP_LISTEN)})


def one_line(error: BaseException) -> str:
    """An exception as one short log line: its type and message, control characters escaped."""
    text = f"{type(error).__name__}: {error}"
    if len(text) > UNEXPECTED_MESSAGE_LIMIT:
        text = text[:UNEXPECTED_MESSAGE_LIMIT] + "..."
    return escape_controls(text)


def log_unexpected(state: ProxyState, what: str, error: BaseException) -> None:
    """One line at ERROR; the traceback (escaped too) at DEBUG only."""
    state.log.error("%s: unexpected error %s", what, one_line(error))
    if state.log.isEnabledFor(logging.DEBUG):
        state.log.debug(
            "The unexpected error:\n%s", escape_controls("".join(traceback.format_exception(error)))
        )


async def prepare(state: ProxyState, squid: SquidProcess, old: ActiveConfig) -> ActiveConfig:
    """Everything up to the snapshot becoming Squid's config; ConfigError/SquidError to skip."""
    settings, log = state.settings, state.log
    log.info("Reloading: reading Squid config %s", old.source)
    try:
        config = await read_config(settings)
    except ConfigError as error:
        state.attempted_paths = error.read_paths
        raise
    state.attempted_paths = watch.spec_for(settings, config).paths  # until it is applied
    refuse_restart_changes(config, old)
    privileged = privileged_port_problem(sorted(set(listen_ports(config)) - set(listen_ports(old))))
    if privileged:
        raise ConfigError(privileged)
    taken = taken_ports(config, old, squid)
    if taken:
        raise ConfigError(
            f"port {', '.join(map(str, taken))} is in use by another process: free it or choose"
            " another http_port; Squid keeps listening on its current ports"
        )
    material = validate_tls(config, settings)
    log.info("Reloading: checking Squid config %s", config.source)
    if material is not None and not settings.merged_ca_pem.exists():
        # `squid -k parse` loads tls-cert=: a reload that turns SSL-bump on needs the merged
        # CA before the check (as startup writes it first). Nothing reads a file not there yet.
        await install_tls(
            material, config, settings, state.children, log, state.commands.stdio_owner
        )
    snapshot = await write_snapshot(config, state.commands.names)
    try:
        await state.commands.check_config(config, snapshot.candidate)
        await prepare_new_cache_dirs(state, config, old, snapshot.candidate)
        if material is not None:
            await install_tls(
                material, config, settings, state.children, log, state.commands.stdio_owner
            )
        activate_snapshot(snapshot)
    except BaseException:
        config_snapshot.discard(snapshot)
        raise
    return config


async def reload_config(state: ProxyState) -> None:
    """One reload; logs its outcome, never raises but CancelledError (a stop)."""
    log = state.log
    squid, old = state.squid, state.config
    if squid is None or old is None or squid.exited.done():
        return
    try:
        config = await prepare(state, squid, old)
    except (ConfigError, SquidError) as error:
        log.error("Reload skipped, Squid keeps its current config: %s", error)
        state.metrics.reload_done("skipped")
        return
    except Exception as error:  # a bug or a fault nobody foresaw must not end PID 1 or Squid
        log_unexpected(state, "Reload skipped, Squid keeps its current config", error)
        state.metrics.reload_done("failed")
        return
    state.config, state.attempted_paths = config, ()
    try:
        await state.health.follow(config)
    except Exception as error:
        log_unexpected(state, "Health server did not follow the new config", error)
    squid.send(signal.SIGHUP)  # what `squid -k reconfigure` does, without another process
    log.info(
        "Squid reconfigured (PID %d kept)",
        state.squid_pid or squid.pid,
        extra={"pid": state.squid_pid or squid.pid},
    )
    state.metrics.reload_done("ok")
    recheck_cert_dbs(state)  # leaves of the previous CA stored meanwhile (config_steps.py)
