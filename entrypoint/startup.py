"""The startup sequence: config, TLS, dirs, checks, Squid up and listening, then the health server (earlier during a slow check)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from entrypoint import runtime_dirs, squid_user
from entrypoint.config_steps import (
    activate_snapshot,
    install_tls,
    read_config,
    remember_activated,
    validate_tls,
    write_snapshot,
)
from entrypoint.head_start import HeadStart
from entrypoint.health_process import HealthError
from entrypoint.pid_file import NoPidInFile, PidFileError, read_pid_file
from entrypoint.squid_config import ActiveConfig, ConfigError
from entrypoint.squid_process import (
    SquidError,
    foreign_listeners,
    listen_ports,
    privileged_port_problem,
)
from entrypoint.state import ProxyState

# A config check (or first `squid -z`) or a Squid start still running after this long has the
# health server started beside it (issue 27: a check takes about 0.03 s, Squid 7.7 with the
# default 1 GB cache_dir listens after about 0.35 s on two idle cores).
HEALTH_DURING_CHECK_AFTER = 0.25
HEALTH_DURING_SQUID_START_AFTER = 1.0


class StartupError(Exception):
    """Startup cannot continue; the message is logged as the reason for exit 1."""


class _Phases:
    def __init__(self, state: ProxyState) -> None:
        self.log = state.log
        self.started = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.log.debug("Phase %s took %.3f s", name, now - self.started)
        self.started = now


def log_selection(state: ProxyState, config: ActiveConfig) -> None:
    settings, log = state.settings, state.log
    if config.is_custom:
        log.info("Using custom Squid config %s", config.source, extra={"path": config.source})
        ports = [address.port for address in config.http_ports]
        if settings.squid_port not in ports:
            log.warning(
                "SQUID_PORT=%d does not match the custom config's http_port %s;"
                " Squid listens where the config says",
                settings.squid_port,
                ", ".join(str(p) for p in ports) or "(none)",
            )
    else:
        log.info(
            "No custom config at %s; using the packaged default %s (http_port %d)",
            settings.config,
            config.source,
            settings.squid_port,
        )


def remove_stale_pid_file(state: ProxyState, config: ActiveConfig) -> None:
    """No Squid of ours runs yet, so a pid file now is left over (its pid may be anyone's now):
    it must neither be taken for our Squid nor make Squid refuse to start."""
    assert config.pid_file is not None
    try:
        what = f"PID {read_pid_file(config.pid_file)} is not a Squid started here"
    except NoPidInFile as error:
        what = f"it holds no pid: {error.reason}"
    except (
        PidFileError
    ) as error:  # a FIFO, symlink, directory, socket: not Squid's, not ours to remove
        raise StartupError(str(error)) from None
    try:
        config.pid_file.unlink()
    except FileNotFoundError:
        return
    except OSError as error:
        raise StartupError(
            f"cannot remove the stale pid file {config.pid_file}: {error.strerror}"
        ) from None
    state.log.warning(
        "Removed stale pid file %s (%s)", config.pid_file, what, extra={"path": config.pid_file}
    )


@contextlib.contextmanager
def startup_error_from(*errors: type[Exception]) -> Iterator[None]:
    """Any of `errors` becomes a StartupError with its message (logged as the reason for exit 1)."""
    try:
        yield
    except errors as error:
        raise StartupError(str(error)) from None


async def start_up(state: ProxyState, head: HeadStart | None = None) -> None:
    """Every step up to a Squid that owns its listening sockets and a health server that answers.

    `head`: the config check head_start began before the imports (its config, dirs and snapshot
    are used as they are). Raises StartupError; a signal cancels it at any await (the caller
    stops what was started).
    """
    phases = _Phases(state)
    config = await select_active_config(state, head)
    phases.done("config_selection")
    with startup_error_from(runtime_dirs.RuntimeDirError, ConfigError):
        ca_material = validate_ca(state, config)
        await prepare_dirs_and_snapshot(state, config, head)
        phases.done("runtime_dirs")
        if ca_material is not None:
            await install_tls(
                ca_material,
                config,
                state.settings,
                state.children,
                state.log,
                state.commands.stdio_owner,
            )
        phases.done("tls_setup")
    with health_server_after(state, config, HEALTH_DURING_CHECK_AFTER):
        await check_config_and_cache(state, config, head)
    phases.done("config_check_and_cache_init")
    ports = usable_listen_ports(config)
    if state.health.start_failed():  # started during a slow check, and failed already
        await health_listening(state)
    with health_server_after(state, config, HEALTH_DURING_SQUID_START_AFTER):
        await start_squid(state, config, ports, phases)
    start_health_server(state, config)
    # Ready needs both; a server that fails now ends the startup, and the caller stops Squid.
    await health_listening(state)
    phases.done("health_server_listening")


def start_health_server(state: ProxyState, config: ActiveConfig) -> None:
    """Spawn the health server unless it runs already; its report is awaited by `health_listening`.

    Its own start (an interpreter and its imports: about 0.1 s of CPU) is put off until Squid
    listens, so it does not compete with Squid's start on a small CPU quota (issue 27), unless
    a step takes long (`health_server_after`).
    """
    if not state.health.started:
        state.health.start(config)


@contextlib.contextmanager
def health_server_after(state: ProxyState, config: ActiveConfig, delay: float) -> Iterator[None]:
    """The health server starts if the block is still running after `delay` s: during a slow step
    (a large config's check, a first `squid -z`, a Squid whose kids keep dying) it answers 503
    saying why, and its own failure (a taken HEALTH_PORT) is known before Squid starts."""
    timer = asyncio.get_running_loop().call_later(delay, start_health_server, state, config)
    try:
        yield
    finally:
        timer.cancel()


async def select_active_config(state: ProxyState, head: HeadStart | None) -> ActiveConfig:
    """The config (head_start's, else read now), logged; as root, who Squid becomes."""
    if head is not None:
        config = head.config
        remember_activated(config.secrets)  # head_start made its snapshot the active one
    else:
        with startup_error_from(ConfigError):
            config = await read_config(state.settings)
    state.config = config
    log_selection(state, config)
    await choose_squid_owner(state, config)
    return config


async def choose_squid_owner(state: ProxyState, config: ActiveConfig) -> None:
    """As root: who Squid becomes (it gets the runtime dirs and stdio), refused at once if Squid would refuse it."""
    with startup_error_from(ConfigError):
        owner = await squid_user.when_root(
            state.children, state.settings.squid_bin, config.directives
        )
    if owner is not None:
        state.log.info(
            "Running as root: Squid switches to user %s (UID %d), which gets its runtime dirs and stdio",
            owner.pw_name,
            owner.pw_uid,
        )
        state.commands.stdio_owner = owner.pw_uid


def validate_ca(state: ProxyState, config: ActiveConfig) -> tuple[bytes, bytes] | None:
    """SSL-bump's CA pair, validated (None without SSL-bump); ConfigError when unusable."""
    settings = state.settings
    ca_material = validate_tls(config, settings)
    if ca_material is not None:
        state.log.info(
            "SSL-bump configured; validated CA %s and %s", settings.tls_cert, settings.tls_key
        )
    return ca_material


def runtime_dir_list(state: ProxyState, config: ActiveConfig) -> list[Path]:
    """The settings' runtime dirs, the pid file's dir and every disk cache_dir."""
    assert config.pid_file is not None  # select_config refuses a config without one
    dirs = [*state.settings.runtime_dirs, config.pid_file.parent]
    return dirs + [cache_dir.path for cache_dir in config.disk_cache_dirs]


async def prepare_dirs_and_snapshot(
    state: ProxyState, config: ActiveConfig, head: HeadStart | None
) -> None:
    """Runtime dirs made and proven writable, the snapshot active (head_start's, or written
    now: no Squid runs yet, and the check below comes before Squid starts), no stale pid file."""
    dirs = runtime_dir_list(state, config)
    if head is None:
        runtime_dirs.prepare_runtime_dirs(dirs)
    owner = state.commands.stdio_owner
    if owner is not None:
        squid_user.hand_over(dirs, owner)
    if head is None:
        activate_snapshot(await write_snapshot(config, state.commands.names))
    else:
        state.commands.names.remember(head.snapshot)
    state.log.info(
        "Runtime directories are writable: %s", ", ".join(str(d) for d in dict.fromkeys(dirs))
    )
    remove_stale_pid_file(state, config)


async def check_config_and_cache(
    state: ProxyState, config: ActiveConfig, head: HeadStart | None
) -> None:
    """`squid -k parse` (head_start's, or started now) and, beside it, `squid -z` if needed.

    `squid -z` parses the config itself and only makes directories: it runs beside the check
    instead of after it; a rejected config still fails with the check's message.
    """
    commands = state.commands
    state.log.info("Checking Squid config %s", config.source)
    check = asyncio.ensure_future(
        commands.check_config(config)
        if head is None
        else commands.finish_check(config, head.parse, head.output_fd, head.started)
    )
    cache = asyncio.ensure_future(commands.initialise_cache(config))
    try:
        await asyncio.wait({check, cache}, return_when=asyncio.FIRST_EXCEPTION)
        if check.done() and check.exception() is not None:
            cache.cancel()
        await asyncio.gather(check, cache, return_exceptions=True)
        with startup_error_from(SquidError):
            for step in (check, cache):
                failure = None if step.cancelled() else step.exception()
                if failure is not None:
                    raise failure
    finally:
        for step in (check, cache):
            step.cancel()


def usable_listen_ports(config: ActiveConfig) -> list[int]:
    """The proxy ports, or StartupError: one Squid may not bind, or one another process listens on."""
    ports = listen_ports(config)
    privileged = privileged_port_problem(ports)
    if privileged:
        raise StartupError(privileged)
    squatters = foreign_listeners(ports, None)
    if squatters:
        taken = ", ".join(str(p) for p in sorted({s.local_port for s in squatters}))
        raise StartupError(
            f"Proxy port {taken} is already in use by another process: free it or change"
            " SQUID_PORT / the config's http_port"
        )
    return ports


async def start_squid(
    state: ProxyState, config: ActiveConfig, ports: list[int], phases: _Phases
) -> None:
    """Squid started, its pid file naming it, its own sockets listening on `ports`."""
    state.log.info("Starting Squid proxy...")
    commands = state.commands
    squid = state.squid = await commands.start(config, state.sinks, state.line_filter)
    assert config.pid_file is not None
    with startup_error_from(SquidError):
        state.squid_pid = await commands.wait_until_running(squid, config.pid_file)
        state.log.info("Squid started with PID %d", state.squid_pid, extra={"pid": state.squid_pid})
        phases.done("squid_start")
        # The pid file comes from the master before its worker listens, and something else
        # may hold the port: ready means Squid's own socket listens (read from /proc).
        await commands.wait_until_listening(squid, ports)
        phases.done("squid_listening")


async def health_listening(state: ProxyState) -> None:
    """The health server's report that it listens (HEALTH_START_TIMEOUT from its start), else StartupError."""
    try:
        await state.health.wait_listening()
    except HealthError as error:
        raise StartupError(str(error)) from None
