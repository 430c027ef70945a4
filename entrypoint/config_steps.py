"""The config-derived steps startup and SIGHUP share: select the config, check and merge the TLS secret."""

from __future__ import annotations

import logging

from entrypoint import squid_config
from entrypoint.processes import ChildProcesses
from entrypoint.settings import Settings
from entrypoint.squid_config import ActiveConfig, ConfigError


def select_config(settings: Settings) -> ActiveConfig:
    """The active config (mounted wins, else the packaged default); ConfigError when unusable."""
    config = squid_config.select_config(settings)
    if config.pid_file is None:
        raise ConfigError(
            f"Squid config {config.source} sets no pid_filename: add"
            f" 'pid_filename {settings.run_dir}/squid.pid' (the entrypoint and the health"
            " checks need to know where Squid writes its pid)"
        )
    return config


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
    material: tuple[bytes, bytes], config: ActiveConfig, settings: Settings,
    children: ChildProcesses, log: logging.Logger, owner_uid: int | None = None,
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
