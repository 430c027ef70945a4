"""Settings read from the environment: ports, log level, timeouts and every container path.

Invalid values never abort startup: they produce a warning naming the variable and the
bad value, and the default is used (the caller logs the warnings once logging is set up).
The one exception is LOG_FORMAT (log_format_problem): a log pipeline expecting JSON would
misread every line, so the entrypoint refuses a bad value instead of guessing.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path

DEFAULT_SQUID_PORT = 3128
DEFAULT_HEALTH_PORT = 8080
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
LOG_FORMATS = ("text", "json")  # the first is the default

MAX_SHUTDOWN_TIMEOUT = (
    86400.0  # a day: anything longer is a typo (and Squid's shutdown_lifetime must hold it)
)
# CONFIG_RELOAD: "watch" polls the mounted files and reloads on a settled change; "signal" waits for SIGHUP.
RELOAD_MODES = ("watch", "signal")
DEFAULT_RELOAD_MODE = "watch"
DEFAULT_WATCH_INTERVAL = 2.0
# Below 0.1 s the stat polling stops being next to free; above an hour nobody would call it watching.
MIN_WATCH_INTERVAL, MAX_WATCH_INTERVAL = 0.1, 3600.0

# ASCII only: int()/float() also take "٨٠٨١", "3_128" and "1e3".
_ASCII_INTEGER = re.compile(r"[0-9]+")
_ASCII_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+")
_SHOWN_LENGTH = 80  # a longer bad value is shown cut, with its length

# Environment variable -> container default, for every path the runtime touches.
PATH_DEFAULTS: dict[str, str] = {
    "CEPHALOPROXY_SQUID_BIN": "/usr/sbin/squid",
    "CEPHALOPROXY_CERTGEN_BIN": "/usr/lib/squid/security_file_certgen",
    "CEPHALOPROXY_CONFIG": "/etc/squid/squid.conf",
    "CEPHALOPROXY_DEFAULT_CONFIG": "/etc/squid/squid.conf.default",
    "CEPHALOPROXY_TLS_DIR": "/etc/squid/ssl_cert",
    "CEPHALOPROXY_RUN_DIR": "/var/run/squid",
    "CEPHALOPROXY_LOG_DIR": "/var/log/squid",
    "CEPHALOPROXY_LIB_DIR": "/var/lib/squid",
    "CEPHALOPROXY_SPOOL_DIR": "/var/spool/squid",
    "CEPHALOPROXY_CACHE_DIR": "/var/cache/squid",
}

# Runtime dir variables, in the order they are created and probed.
RUNTIME_DIR_VARIABLES: tuple[str, ...] = (
    "CEPHALOPROXY_RUN_DIR",
    "CEPHALOPROXY_LOG_DIR",
    "CEPHALOPROXY_LIB_DIR",
    "CEPHALOPROXY_SPOOL_DIR",
    "CEPHALOPROXY_CACHE_DIR",
)

# LOG_LEVEL spellings accepted -> Python logging level name.
LOG_LEVEL_ALIASES: dict[str, str] = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "ERROR": "ERROR",
}

# The upstream CephaloProxy image's LOG_LEVEL was Squid's debug level (0 critical, 1 important,
# its default, 2 verbose ... 9 all). Accepted with a warning, for drop-in compatibility. 0 maps
# to WARNING, not ERROR, so that warnings (an expired CA, a port mismatch) are never hidden.
NUMERIC_LOG_LEVELS: dict[str, str] = {
    "0": "WARNING",
    "1": "INFO",
    **{str(n): "DEBUG" for n in range(2, 10)},
}


@dataclasses.dataclass(frozen=True)
class Settings:
    squid_port: int
    health_port: int
    log_level: str
    shutdown_timeout: float
    squid_bin: Path
    certgen_bin: Path
    config: Path
    default_config: Path
    tls_dir: Path
    run_dir: Path
    log_dir: Path
    lib_dir: Path
    spool_dir: Path
    cache_dir: Path
    log_format: str = LOG_FORMATS[0]
    metrics: bool = True  # METRICS: GET /metrics on HEALTH_PORT
    config_reload: str = DEFAULT_RELOAD_MODE
    watch_interval: float = DEFAULT_WATCH_INTERVAL

    @property
    def runtime_dirs(self) -> tuple[Path, ...]:
        return (self.run_dir, self.log_dir, self.lib_dir, self.spool_dir, self.cache_dir)

    @property
    def tls_cert(self) -> Path:
        return self.tls_dir / "tls.crt"

    @property
    def tls_key(self) -> Path:
        return self.tls_dir / "tls.key"

    @property
    def merged_ca_pem(self) -> Path:
        return self.lib_dir / "squid-ca.pem"

    @property
    def default_ssl_db(self) -> Path:
        return self.lib_dir / "ssl_db"

    def default_path_substitutions(self) -> dict[str, Path]:
        """Container default dir -> configured dir, for rendering the packaged config."""
        return {
            PATH_DEFAULTS["CEPHALOPROXY_RUN_DIR"]: self.run_dir,
            PATH_DEFAULTS["CEPHALOPROXY_LOG_DIR"]: self.log_dir,
            PATH_DEFAULTS["CEPHALOPROXY_LIB_DIR"]: self.lib_dir,
            PATH_DEFAULTS["CEPHALOPROXY_SPOOL_DIR"]: self.spool_dir,
            PATH_DEFAULTS["CEPHALOPROXY_CACHE_DIR"]: self.cache_dir,
        }


def ascii_integer(text: str, max_digits: int) -> int | None:
    """The value of ASCII digits with at most `max_digits` significant ones, else None.

    Never int()'s ValueError: it refuses strings of more than 4300 digits.
    """
    significant = text.lstrip("0")
    if not _ASCII_INTEGER.fullmatch(text) or len(significant) > max_digits:
        return None
    return int(significant or "0")  # int() counts leading zeros against its limit too


def port_number(text: str) -> int | None:
    """A TCP port 1-65535 written in ASCII digits, else None."""
    value = ascii_integer(text, 5)
    return value if value is not None and 1 <= value <= 65535 else None


def shown(raw: str) -> str:
    """A bad value for a message: quoted with every control character escaped, cut when long."""
    if len(raw) <= _SHOWN_LENGTH:
        return repr(raw)
    return f"{raw[:_SHOWN_LENGTH]!r}... ({len(raw)} characters)"


def _parse_port(env: Mapping[str, str], name: str, default: int, warnings: list[str]) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = port_number(raw.strip())
    if value is None:
        warnings.append(
            f"Invalid {name}={shown(raw)}: expected a TCP port number 1-65535; using default {default}"
        )
        return default
    return value


def _parse_log_level(env: Mapping[str, str], warnings: list[str]) -> str:
    raw = env.get("LOG_LEVEL")
    if raw is None or raw.strip() == "":
        return DEFAULT_LOG_LEVEL
    level = LOG_LEVEL_ALIASES.get(raw.strip().upper())
    numeric = NUMERIC_LOG_LEVELS.get(raw.strip())
    if numeric is not None:
        warnings.append(
            f"LOG_LEVEL={shown(raw)} is the upstream image's numeric Squid debug level; using {numeric}"
            f" (0 -> WARNING, 1 -> INFO, 2-9 -> DEBUG). Set LOG_LEVEL={numeric} to silence this warning"
        )
        return numeric
    if level is None:
        warnings.append(
            f"Invalid LOG_LEVEL={shown(raw)}: expected one of DEBUG, INFO, WARNING (WARN), ERROR (or 0-9);"
            f" using default {DEFAULT_LOG_LEVEL}"
        )
        return DEFAULT_LOG_LEVEL
    return level


def _parse_timeout(env: Mapping[str, str], warnings: list[str]) -> float:
    raw = env.get("SHUTDOWN_TIMEOUT")
    if raw is None or raw.strip() == "":
        return DEFAULT_SHUTDOWN_TIMEOUT
    text = raw.strip()
    if text.endswith("s"):  # accept "30s" as well as "30"
        text = text[:-1]
    value = float(text) if _ASCII_DECIMAL.fullmatch(text) else math.nan
    if not 0 < value <= MAX_SHUTDOWN_TIMEOUT:  # NaN fails too
        warnings.append(
            f"Invalid SHUTDOWN_TIMEOUT={shown(raw)}: expected a positive number of seconds"
            f" up to {MAX_SHUTDOWN_TIMEOUT:g}; using default {DEFAULT_SHUTDOWN_TIMEOUT:g}"
        )
        return DEFAULT_SHUTDOWN_TIMEOUT
    return value


def log_format_problem(env: Mapping[str, str]) -> str | None:
    """Why LOG_FORMAT is refused (naming it and the allowed values), or None when it is valid."""
    raw = env.get("LOG_FORMAT", "")
    if raw.strip() == "" or raw.strip().lower() in LOG_FORMATS:
        return None
    return f"Invalid LOG_FORMAT={shown(raw)}: expected one of {', '.join(LOG_FORMATS)}"


def _parse_log_format(env: Mapping[str, str]) -> str:
    raw = env.get("LOG_FORMAT", "").strip().lower()
    return (
        raw if raw in LOG_FORMATS else LOG_FORMATS[0]
    )  # a bad value was refused (log_format_problem)


def _parse_switch(env: Mapping[str, str], name: str, default: bool, warnings: list[str]) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    warnings.append(
        f"Invalid {name}={shown(raw)}: expected on or off; using {'on' if default else 'off'}"
    )
    return default


def _parse_reload_mode(env: Mapping[str, str], warnings: list[str]) -> str:
    raw = env.get("CONFIG_RELOAD")
    if raw is None or raw.strip() == "":
        return DEFAULT_RELOAD_MODE
    if raw.strip().lower() not in RELOAD_MODES:
        warnings.append(
            f"Invalid CONFIG_RELOAD={shown(raw)}: expected 'watch' (reload when the mounted config or"
            f" TLS secret changes) or 'signal' (reload on SIGHUP only); using default {DEFAULT_RELOAD_MODE}"
        )
        return DEFAULT_RELOAD_MODE
    return raw.strip().lower()


def _parse_watch_interval(env: Mapping[str, str], warnings: list[str]) -> float:
    raw = env.get("CONFIG_WATCH_INTERVAL")
    if raw is None or raw.strip() == "":
        return DEFAULT_WATCH_INTERVAL
    text = raw.strip()
    if text.endswith("s"):  # "2s" as well as "2", as SHUTDOWN_TIMEOUT
        text = text[:-1]
    value = float(text) if _ASCII_DECIMAL.fullmatch(text) else math.nan
    if not MIN_WATCH_INTERVAL <= value <= MAX_WATCH_INTERVAL:  # NaN fails too
        warnings.append(
            f"Invalid CONFIG_WATCH_INTERVAL={shown(raw)}: expected seconds from {MIN_WATCH_INTERVAL:g}"
            f" to {MAX_WATCH_INTERVAL:g}; using default {DEFAULT_WATCH_INTERVAL:g}"
        )
        return DEFAULT_WATCH_INTERVAL
    return value


def _parse_path(env: Mapping[str, str], name: str, warnings: list[str]) -> Path:
    default = PATH_DEFAULTS[name]
    raw = env.get(name)
    if raw is None or raw == "":
        return Path(default)
    if not raw.startswith("/") or "\n" in raw or "\0" in raw:
        warnings.append(
            f"Invalid {name}={shown(raw)}: expected an absolute path; using default {default}"
        )
        return Path(default)
    return Path(raw)


def load_settings(env: Mapping[str, str]) -> tuple[Settings, list[str]]:
    """Read settings from `env`; returns them with the warnings about ignored values."""
    warnings: list[str] = []
    squid_port = _parse_port(env, "SQUID_PORT", DEFAULT_SQUID_PORT, warnings)
    health_port = _parse_port(env, "HEALTH_PORT", DEFAULT_HEALTH_PORT, warnings)
    if health_port == squid_port:
        fallback = (
            DEFAULT_HEALTH_PORT if squid_port != DEFAULT_HEALTH_PORT else DEFAULT_HEALTH_PORT + 1
        )
        warnings.append(
            f"Invalid HEALTH_PORT={shown(env.get('HEALTH_PORT', ''))}: equals SQUID_PORT {squid_port};"
            f" using {fallback}"
        )
        health_port = fallback
    paths = {name: _parse_path(env, name, warnings) for name in PATH_DEFAULTS}
    settings = Settings(
        squid_port=squid_port,
        health_port=health_port,
        log_level=_parse_log_level(env, warnings),
        shutdown_timeout=_parse_timeout(env, warnings),
        squid_bin=paths["CEPHALOPROXY_SQUID_BIN"],
        certgen_bin=paths["CEPHALOPROXY_CERTGEN_BIN"],
        config=paths["CEPHALOPROXY_CONFIG"],
        default_config=paths["CEPHALOPROXY_DEFAULT_CONFIG"],
        tls_dir=paths["CEPHALOPROXY_TLS_DIR"],
        run_dir=paths["CEPHALOPROXY_RUN_DIR"],
        log_dir=paths["CEPHALOPROXY_LOG_DIR"],
        lib_dir=paths["CEPHALOPROXY_LIB_DIR"],
        spool_dir=paths["CEPHALOPROXY_SPOOL_DIR"],
        cache_dir=paths["CEPHALOPROXY_CACHE_DIR"],
        log_format=_parse_log_format(env),
        metrics=_parse_switch(env, "METRICS", True, warnings),
        config_reload=_parse_reload_mode(env, warnings),
        watch_interval=_parse_watch_interval(env, warnings),
    )
    return settings, warnings
