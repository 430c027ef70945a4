"""The config-derived steps startup and SIGHUP share: read the config, snapshot it, check and merge the TLS secret, keep the cert DBs to the CA."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from entrypoint import config_snapshot, redact, squid_config
from entrypoint.config_snapshot import Snapshot, SnapshotNames
from entrypoint.mounted_files import TLS_SIZE_LIMIT, FileProblem, read_bounded
from entrypoint.processes import ChildProcesses
from entrypoint.settings import Settings
from entrypoint.squid_config import ActiveConfig, CertDb, ConfigError
from entrypoint.threads import start_daemon_thread

if TYPE_CHECKING:
    from entrypoint.state import ProxyState

T = TypeVar("T")
# The worker's own bounds (squid_config.READ_TIME_LIMIT) come first; this one holds even
# when a file system hangs a read.
WORKER_TIMEOUT = squid_config.READ_TIME_LIMIT + 10.0


async def in_worker(
    job: Callable[[threading.Event], T], what: str, timeout: float = WORKER_TIMEOUT
) -> T:
    """`job(cancel)` in a daemon thread, so the event loop (signals, output relays) keeps running.

    Cancelled or timed out, the job is told to stop (`cancel` is set) and left behind: a
    daemon thread never holds up PID 1's exit. No thread to be had (RLIMIT_NPROC): ConfigError,
    never the job on the event loop (signals would wait for it).
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()
    cancel = threading.Event()

    def settle(result: T | None, error: BaseException | None) -> None:
        if outcome.done():
            return
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(result)  # type: ignore[arg-type]  # set only when the call returned

    def work() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = job(cancel)
        except BaseException as failure:  # handed to the awaiting task, raised there
            error = failure
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    try:
        start_daemon_thread(work, "cephaloproxy-config")
    except RuntimeError:
        raise ConfigError(
            f"cannot start a thread for {what}: the container's process limit"
            " (RLIMIT_NPROC / pids.max) is reached: raise it"
        ) from None
    try:
        return await asyncio.wait_for(outcome, timeout)
    except TimeoutError:
        raise ConfigError(f"{what} took longer than {timeout:g} s (a hung file system?)") from None
    finally:
        cancel.set()


def select_config(settings: Settings, cancel: threading.Event | None = None) -> ActiveConfig:
    """The active config (mounted wins, else the packaged default); ConfigError when unusable."""
    config = squid_config.select_config(settings, cancel)
    if config.pid_file is None:
        raise ConfigError(
            f"Squid config {config.source} sets no pid_filename: add"
            f" 'pid_filename {settings.run_dir}/squid.pid' (the entrypoint and the health"
            " checks need to know where Squid writes its pid)"
        )
    return config


# What redaction remembers (redact.remember_for): the secrets of each config Squid may still
# print, rebuilt at each step, so credential rotations never pile up.
ACTIVE_SECRETS = "active"  # the config Squid reads (its snapshot is active)
PREVIOUS_SECRETS = "previous"  # the one before: printed while Squid switches
ATTEMPTED_SECRETS = "attempted"  # the one read last: a refused reload's `squid -k parse` prints it


async def read_config(settings: Settings) -> ActiveConfig:
    """`select_config` off the event loop (a large include tree takes its time); its secrets,
    or those of what was read of a refused one, are remembered as the attempted config's."""
    try:
        config = await in_worker(
            lambda cancel: select_config(settings, cancel),
            f"reading the Squid config {settings.config}",
        )
    except ConfigError as error:
        redact.remember_for(ATTEMPTED_SECRETS, error.secrets)
        raise
    redact.remember_for(ATTEMPTED_SECRETS, config.secrets)
    return config


async def write_snapshot(config: ActiveConfig, names: SnapshotNames) -> Snapshot:
    """The next snapshot of `config` in the run dir, not active yet; its paths go into `names`."""
    try:
        snapshot = await in_worker(
            lambda cancel: config_snapshot.write(config), "writing the config snapshot"
        )
    except OSError as error:
        raise ConfigError(
            f"cannot write the config snapshot for Squid in {config.path.parent}: {error.strerror}"
        ) from None
    names.remember(snapshot)
    return snapshot


def activate_snapshot(snapshot: Snapshot) -> None:
    """Make `snapshot` what Squid reads (rename over the active path); ConfigError when it fails.
    Its secrets become the active config's, the active one's the previous one's."""
    try:
        config_snapshot.activate(snapshot)
    except OSError as error:
        config_snapshot.discard(snapshot)
        raise ConfigError(
            f"cannot make {snapshot.candidate} Squid's config {snapshot.active}: {error.strerror}"
        ) from None
    remember_activated(snapshot.secrets)


def remember_activated(secrets: frozenset[str]) -> None:
    """`secrets` remembered as the active config's; the active ones as the previous config's
    (older ones are forgotten: Squid no longer prints them)."""
    redact.remember_for(PREVIOUS_SECRETS, redact.remembered_for(ACTIVE_SECRETS))
    redact.remember_for(ACTIVE_SECRETS, secrets)


def validate_tls(config: ActiveConfig, settings: Settings) -> tuple[bytes, bytes] | None:
    """The validated CA pair when the config uses SSL-bump, else None; ConfigError when bad."""
    if not config.uses_ssl_bump:
        return None
    from entrypoint import tls  # `ssl` is only worth importing when SSL-bump is on

    try:
        return tls.validate_ca_pair(settings.tls_cert, settings.tls_key, settings.tls_dir)
    except tls.TlsError as error:
        raise ConfigError(str(error)) from None


async def install_tls(
    material: tuple[bytes, bytes],
    config: ActiveConfig,
    settings: Settings,
    children: ChildProcesses,
    log: logging.Logger,
    owner_uid: int | None = None,
) -> None:
    """Merge the pair atomically into squid-ca.pem; (re)build certificate DBs not made for this CA.

    `owner_uid`: started as root, the user Squid switches to, which must own both.
    """
    from entrypoint import squid_user, tls

    try:
        tls.merge_ca_pem(*material, settings.merged_ca_pem)
        if owner_uid is not None:
            squid_user.hand_over([settings.merged_ca_pem], owner_uid)
        log.info("Merged CA certificate and key into %s (mode 0600)", settings.merged_ca_pem)
        fingerprint = tls.ca_fingerprint(material[0])
        for db in config.cert_dbs(settings.default_ssl_db):
            await tls.ensure_cert_db(children, settings.certgen_bin, db, fingerprint, log)
            if owner_uid is not None:
                squid_user.hand_over([db.path], owner_uid, recursive=True)
    except OSError as error:
        raise ConfigError(f"cannot write {settings.merged_ca_pem}: {error.strerror}") from None
    except tls.TlsError as error:
        raise ConfigError(str(error)) from None


# After a reload rebuilt a certificate DB: when to look for leaves of the previous CA in it
# (seconds after the reconfigure). Connections Squid bumped with the previous config store
# theirs until its kid has reconfigured and they are done.
RECHECK_DELAYS = (2.0, 10.0, 60.0)
_rechecks: set[asyncio.Task[None]] = set()


def recheck_cert_dbs(state: ProxyState) -> None:
    """Called by a reload right after Squid's reconfigure: schedule `tls.recheck_cert_db` for
    the DBs rebuilt since the last call (an earlier reload's pending rechecks go on: made for
    another CA by then, a DB is left alone)."""
    from entrypoint import tls

    config = state.config
    if config is None or not config.uses_ssl_bump or not tls.REBUILT:
        return
    dbs = [
        db
        for db in config.cert_dbs(state.settings.default_ssl_db)
        if Path(os.path.realpath(db.path)) in tls.REBUILT
    ]
    tls.REBUILT.clear()
    if dbs and not any(d.args[:1] in (("peek",), ("stare",)) for d in config.named("ssl_bump")):
        state.log.warning(
            "SSL-bump: the certificate DB was rebuilt, but the config bumps at step 1 (no 'ssl_bump"
            " peek' or 'stare'): Squid keeps the certificates it made in memory across a reload"
            " (dynamic_cert_mem_cache_size); restart the container after a CA rotation"
        )
    task = asyncio.get_running_loop().create_task(_recheck(state, dbs))
    _rechecks.add(task)
    task.add_done_callback(_rechecks.discard)


async def _recheck(state: ProxyState, dbs: list[CertDb]) -> None:
    """Each pass checks the leaves stored since the last one against the CA in squid-ca.pem
    (what Squid was last given, so a later reload's CA if there was one)."""
    from entrypoint import squid_user, tls

    checked: dict[Path, set[str]] = {db.path: set() for db in dbs}
    waited = 0.0
    for delay in RECHECK_DELAYS:
        await asyncio.sleep(delay - waited)
        waited = delay
        for db in dbs:
            try:
                ca_cert = read_bounded(state.settings.merged_ca_pem, TLS_SIZE_LIMIT)
                rebuilt = await tls.recheck_cert_db(
                    state.children,
                    state.settings.certgen_bin,
                    db,
                    ca_cert,
                    state.log,
                    checked[db.path],
                    in_worker,
                )
                owner = state.commands.stdio_owner
                if rebuilt and owner is not None:
                    squid_user.hand_over([db.path], owner, recursive=True)
            except (tls.TlsError, FileProblem, OSError, ConfigError) as error:
                state.log.error(
                    "SSL certificate DB %s could not be checked after the reload: %s",
                    db.path,
                    error,
                )
