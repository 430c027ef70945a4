"""Settings from the environment: defaults, valid values, and warnings for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entrypoint.settings import (
    LOG_LEVEL_ALIASES,
    MAX_SHUTDOWN_TIMEOUT,
    PATH_DEFAULTS,
    Settings,
    load_settings,
)


def test_defaults_are_the_container_contract() -> None:
    settings, warnings = load_settings({})
    assert warnings == []
    assert (
        settings.squid_port,
        settings.health_port,
        settings.log_level,
        settings.shutdown_timeout,
    ) == (3128, 8080, "INFO", 30.0)
    assert settings.config == Path("/etc/squid/squid.conf")
    assert settings.default_config == Path("/etc/squid/squid.conf.default")
    assert settings.tls_cert == Path("/etc/squid/ssl_cert/tls.crt")
    assert settings.merged_ca_pem == Path("/var/lib/squid/squid-ca.pem")
    assert [str(p) for p in settings.runtime_dirs] == [
        "/var/run/squid",
        "/var/log/squid",
        "/var/lib/squid",
        "/var/spool/squid",
        "/var/cache/squid",
    ]


def test_valid_values_and_path_overrides_are_used() -> None:
    env = {
        "SQUID_PORT": "3129",
        "HEALTH_PORT": "9090",
        "LOG_LEVEL": "warn",
        "SHUTDOWN_TIMEOUT": "12.5s",
    }
    env.update({name: f"/x/{name.lower()}" for name in PATH_DEFAULTS})
    settings, warnings = load_settings(env)
    assert warnings == []
    assert (
        settings.squid_port,
        settings.health_port,
        settings.log_level,
        settings.shutdown_timeout,
    ) == (3129, 9090, "WARNING", 12.5)
    assert settings.squid_bin == Path("/x/cephaloproxy_squid_bin")
    assert settings.spool_dir == Path("/x/cephaloproxy_spool_dir")


@pytest.mark.parametrize(
    ("name", "value", "field", "default"),
    [
        ("SQUID_PORT", "abc", "squid_port", 3128),
        ("SQUID_PORT", "0", "squid_port", 3128),
        ("SQUID_PORT", "70000", "squid_port", 3128),
        ("SQUID_PORT", "\u0668\u0660\u0668\u0661", "squid_port", 3128),  # Arabic-Indic 8081
        ("SQUID_PORT", "3_128", "squid_port", 3128),
        ("HEALTH_PORT", "\uff18\uff10\uff18\uff11", "health_port", 8080),  # fullwidth 8081
        ("SHUTDOWN_TIMEOUT", "\u0663\u0660", "shutdown_timeout", 30.0),  # Arabic-Indic 30
        ("SHUTDOWN_TIMEOUT", "1_0", "shutdown_timeout", 30.0),
        ("SHUTDOWN_TIMEOUT", "1e1", "shutdown_timeout", 30.0),
        ("HEALTH_PORT", "-1", "health_port", 8080),
        ("LOG_LEVEL", "verbose", "log_level", "INFO"),
        ("SHUTDOWN_TIMEOUT", "soon", "shutdown_timeout", 30.0),
        ("SHUTDOWN_TIMEOUT", "0", "shutdown_timeout", 30.0),
        ("SHUTDOWN_TIMEOUT", "inf", "shutdown_timeout", 30.0),
        ("CEPHALOPROXY_RUN_DIR", "relative/dir", "run_dir", Path("/var/run/squid")),
    ],
)
def test_bad_value_warns_naming_variable_and_value_and_uses_default(
    name: str, value: str, field: str, default: object
) -> None:
    settings, warnings = load_settings({name: value})
    assert getattr(settings, field) == default
    assert len(warnings) == 1
    assert f"Invalid {name}={value!r}" in warnings[0]
    assert "using default" in warnings[0]


def test_health_port_equal_to_squid_port_is_refused() -> None:
    settings, warnings = load_settings({"SQUID_PORT": "8080", "HEALTH_PORT": "8080"})
    assert settings.squid_port == 8080 and settings.health_port != 8080
    assert "equals SQUID_PORT" in warnings[0]


@pytest.mark.parametrize(
    ("value", "level"), [("0", "WARNING"), ("1", "INFO"), ("2", "DEBUG"), (" 9 ", "DEBUG")]
)
def test_upstream_numeric_log_level_is_mapped_with_a_warning(value: str, level: str) -> None:
    settings, warnings = load_settings({"LOG_LEVEL": value})
    assert settings.log_level == level
    assert len(warnings) == 1
    assert (
        f"LOG_LEVEL={value!r} is the upstream image's numeric Squid debug level; using {level}"
        in warnings[0]
    )


@pytest.mark.parametrize("value", ["10", "-1", "\u0662", "1.0"])
def test_other_numbers_are_invalid_log_levels(value: str) -> None:
    settings, warnings = load_settings({"LOG_LEVEL": value})
    assert settings.log_level == "INFO"
    assert f"Invalid LOG_LEVEL={value!r}" in warnings[0]


# -- property: any environment gives valid Settings and escaped warnings ---------------------------


_VARIABLES = [
    "SQUID_PORT",
    "HEALTH_PORT",
    "LOG_LEVEL",
    "SHUTDOWN_TIMEOUT",
    "CONFIG_RELOAD",
    "CONFIG_WATCH_INTERVAL",
    *PATH_DEFAULTS,
]
_values = st.one_of(
    st.text(),
    st.text("0123456789", min_size=4290, max_size=5000),  # int()'s digit limit is 4300
    st.builds(lambda zeros, n: "0" * zeros + str(n), st.integers(0, 5000), st.integers(0, 70000)),
    st.from_regex(r"[ \t]*[0-9]{0,9}(\.[0-9]{0,4})?s?[ \t]*", fullmatch=True),
    st.sampled_from(
        [
            "DEBUG",
            "warn",
            "0",
            "9",
            "10",
            "\x1b[31m",
            "/x\n",
            "/x\0",
            "inf",
            "nan",
            "1e400",
            "86400.5",
        ]
    ),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Zl", "Zp", "Nd"]), max_size=20),
    st.text(min_size=1).map(lambda text: "/" + text),
)


@given(st.dictionaries(st.sampled_from(_VARIABLES), _values))
def test_any_environment_gives_valid_settings_and_escaped_warnings(env: dict[str, str]) -> None:
    settings, warnings = load_settings(env)
    assert isinstance(settings, Settings)
    assert 1 <= settings.squid_port <= 65535 and 1 <= settings.health_port <= 65535
    assert settings.health_port != settings.squid_port
    assert settings.log_level in LOG_LEVEL_ALIASES.values()
    assert 0 < settings.shutdown_timeout <= MAX_SHUTDOWN_TIMEOUT
    assert settings.config_reload in ("watch", "signal")
    assert 0.1 <= settings.watch_interval <= 3600
    for name in PATH_DEFAULTS:
        path = str(
            getattr(
                settings,
                {
                    "CEPHALOPROXY_SQUID_BIN": "squid_bin",
                    "CEPHALOPROXY_CERTGEN_BIN": "certgen_bin",
                    "CEPHALOPROXY_CONFIG": "config",
                    "CEPHALOPROXY_DEFAULT_CONFIG": "default_config",
                    "CEPHALOPROXY_TLS_DIR": "tls_dir",
                }.get(name, name.removeprefix("CEPHALOPROXY_").lower()),
            )
        )
        assert path.startswith("/") and "\n" not in path and "\0" not in path
    for warning in warnings:
        named = [name for name in _VARIABLES if f"{name}=" in warning]
        assert named, warning
        assert all(character.isprintable() for character in warning), repr(warning)
        assert len(warning) < 400, warning  # a long value is shown cut


@pytest.mark.parametrize("name", ["SQUID_PORT", "HEALTH_PORT", "SHUTDOWN_TIMEOUT"])
def test_numbers_over_the_4300_digit_limit_warn_and_use_the_default(name: str) -> None:
    settings, warnings = load_settings({name: "1" * 5000})
    assert (settings.squid_port, settings.health_port, settings.shutdown_timeout) == (
        3128,
        8080,
        30.0,
    )
    assert warnings == [
        f"Invalid {name}={'1' * 80!r}... (5000 characters): expected a"
        + (
            " TCP port number 1-65535; using default "
            + ("3128" if name == "SQUID_PORT" else "8080")
            if name != "SHUTDOWN_TIMEOUT"
            else " positive number of seconds up to 86400; using default 30"
        )
    ]


def test_leading_zeros_are_still_a_port() -> None:
    assert load_settings({"SQUID_PORT": "0" * 5000 + "3129"})[0].squid_port == 3129


def test_config_reload_and_the_watch_interval() -> None:
    assert (load_settings({})[0].config_reload, load_settings({})[0].watch_interval) == (
        "watch",
        2.0,
    )
    settings, warnings = load_settings(
        {"CONFIG_RELOAD": " Signal ", "CONFIG_WATCH_INTERVAL": "0.5s"}
    )
    assert (settings.config_reload, settings.watch_interval, warnings) == ("signal", 0.5, [])
    settings, warnings = load_settings(
        {"CONFIG_RELOAD": "inotify", "CONFIG_WATCH_INTERVAL": "0.01"}
    )
    assert (settings.config_reload, settings.watch_interval) == ("watch", 2.0)
    assert warnings == [
        "Invalid CONFIG_RELOAD='inotify': expected 'watch' (reload when the mounted config or TLS secret"
        " changes) or 'signal' (reload on SIGHUP only); using default watch",
        "Invalid CONFIG_WATCH_INTERVAL='0.01': expected seconds from 0.1 to 3600; using default 2",
    ]
