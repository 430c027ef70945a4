"""End to end, real entrypoint and Squid 7.7: generated secrets in every form a config takes them
never reach stdout or stderr, at any LOG_LEVEL, with a valid config and a rejected one; and no
raw control character (from a config value, an env path or a health client) reaches the log."""

from __future__ import annotations

import os
import re
import signal
import socket
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from entrypoint.harness import (
    EntrypointRun,
    Workspace,
    http_get,
    python_for_child,
    squid_root,
    wait_for_status,
)
from entrypoint.testing import squid_available  # noqa: F401 - fixture

# No whitespace, quote, backslash, # or %: one Squid word. "xQ" makes each secret distinctive.
_CHARS = string.ascii_letters + string.digits + "!*+-.:;<=>?@[]^_{|}~(),&"
_URL_SAFE = string.ascii_letters + string.digits + "-._~!*+"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _secret(chars: str = _CHARS) -> st.SearchStrategy[str]:
    return st.text(alphabet=chars, min_size=4, max_size=10).map(lambda text: "xQ" + text)


def _any_case(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(word, upper))
    )


@st.composite
def secret_configs(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, str]]:
    """(the secrets, by form; option names as written, in generated case)."""
    slashless = _CHARS.replace("/", "")
    secrets = {
        "login_a": draw(_secret()), "login_b": draw(_secret()),  # login=u:A,B (the part after , leaked)
        "quoted_1": draw(_secret()), "quoted_2": draw(_secret()),  # login="u:ONE TWO"
        "cachemgr": draw(_secret(_URL_SAFE)),
        "dsn_1": draw(_secret(slashless)), "dsn_2": draw(_secret(slashless)),  # daemon:/h/d/t/u/ONE/TWO
        "ldap_w": draw(_secret()),  # -wSECRET
        "sql_dsn": draw(_secret(_CHARS.replace(";", ""))), "sql_password": draw(_secret()),
        "url": draw(_secret()), "authorization": draw(_secret()),
    }
    names = {"login": draw(_any_case("login")), "password": draw(_any_case("password"))}
    return secrets, names


def _pieces(secrets: dict[str, str]) -> list[str]:
    return list(secrets.values())


def _write_log_daemon(workspace: Workspace) -> Path:
    """A logfile_daemon that says which log it writes (log_db_daemon's DSN: a child echoing it)."""
    script = workspace.bin / "logd"
    script.write_text(
        f"#!{python_for_child()}\n"
        "import sys\n"
        "print('logd: writing to', sys.argv[1], file=sys.stderr, flush=True)\n"
        "for _ in sys.stdin.buffer: pass\n"
    )
    os.chmod(script, 0o775)
    return script


def secret_config(workspace: Workspace, secrets: dict[str, str], names: dict[str, str], broken: bool) -> str:
    helpers = squid_root() / "usr/lib/squid"
    s = secrets
    lines = [
        f"http_port 127.0.0.1:{workspace.squid_port}",
        f"pid_filename {workspace.runtime_dir('run')}/custom.pid",
        "http_access allow localhost", "http_access deny all",
        "cache_log /dev/stderr", "access_log stdio:/dev/stdout", "logfile_rotate 0",
        "visible_hostname redact-test", "shutdown_lifetime 1 seconds", "pinger_enable off", "netdb_filename none",
        f"cache_peer 127.0.0.1 parent 9 0 no-query name=p1 {names['login']}=u:{s['login_a']},{s['login_b']}",
        f'cache_peer 127.0.0.1 parent 9 0 no-query name=p2 login="u:{s["quoted_1"]} {s["quoted_2"]}"',
        f"cachemgr_passwd {s['cachemgr']} all",
        f"logfile_daemon {_write_log_daemon(workspace)}",
        f"access_log daemon:/db.example/squid/log/logger/{s['dsn_1']}/{s['dsn_2']} squid",
        f"auth_param basic program {helpers}/basic_ldap_auth -b dc=x -D cn=admin -w{s['ldap_w']} -h 127.0.0.1",
        "auth_param basic children 1 startup=0 idle=1",
        f'external_acl_type sess children-startup=0 %SRC {helpers}/ext_sql_session_acl'
        f' --dsn "DBI:mysql:database=squid;password={s["sql_dsn"]}" --{names["password"]} {s["sql_password"]}',
        f"url_rewrite_program {helpers}/url_fake_rewrite http://bob:{s['url']}@host.example/",
        "url_rewrite_children 1 startup=0 idle=1",
        f'request_header_add Authorization "Basic {s["authorization"]}" all',
    ]
    if broken:
        lines.append(f"cache_peer 127.0.0.1 parent notaport 0 no-query name=p3 login=u:{s['login_a']}")
    return "\n".join(lines) + "\n"


def _stop(run: EntrypointRun) -> None:
    run.process.send_signal(signal.SIGTERM)
    run.wait_exit(60)


@pytest.mark.parametrize("broken", [False, True], ids=["valid", "rejected"])
@pytest.mark.parametrize("level", LEVELS)
@settings(max_examples=2, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=secret_configs())
def test_no_generated_secret_reaches_the_log(
    squid_available: None, level: str, broken: bool, case: tuple[dict[str, str], dict[str, str]]  # noqa: F811
) -> None:
    secrets, names = case
    workspace = Workspace()
    run: EntrypointRun | None = None
    try:
        workspace.write_custom_config(secret_config(workspace, secrets, names, broken))
        run = EntrypointRun(workspace, workspace.env(LOG_LEVEL=level))
        if broken:
            assert run.wait_exit(60) == 1
        else:
            wait_for_status(f"http://127.0.0.1:{workspace.health_port}/health", 200, timeout=60)
            # A cachemgr request carries the password in its URL, into the access log on stdout.
            http_get(f"http://127.0.0.1:{workspace.squid_port}/squid-internal-mgr/menu@{secrets['cachemgr']}")
            _stop(run)
        output = run.stdout + run.stderr
        leaked = [piece for piece in _pieces(secrets) if piece in output]
        assert not leaked, f"{leaked} leaked at LOG_LEVEL={level}:\n{output}"
        if level == "DEBUG":  # the parse echo was there, redacted, directive names kept
            assert re.search(r"cache_peer 127\.0\.0\.1 parent 9 0 no-query name=p1 login=<redacted>", output, re.I), output
    finally:
        if run is not None:
            run.cleanup()
        workspace.remove()


_CONTROLS = ("\x1b", "\r", "\x85", "\u2028", "\x07")


def test_control_characters_from_config_env_path_and_health_client_are_escaped(
    squid_available: None,  # noqa: F811
) -> None:
    workspace = Workspace()
    run: EntrypointRun | None = None
    try:
        odd_dir = workspace.make_dir(workspace.etc / "conf\x1b[2J\r\x85\u2028d", 0o775)
        config = odd_dir / "squid.conf"
        config.write_text(
            f"http_port 127.0.0.1:{workspace.squid_port}\n"
            f"pid_filename {workspace.runtime_dir('run')}/custom.pid\n"
            "http_access allow localhost\nhttp_access deny all\n"
            "cache_log /dev/stderr\naccess_log stdio:/dev/stdout\nlogfile_rotate 0\n"
            "visible_hostname ctl-test\nshutdown_lifetime 1 seconds\npinger_enable off\nnetdb_filename none\n"
            "acl odd dstdomain .esc\x1b[31m.example .bel\x07.example .nel\x85.example .cr\r.example\n"
            "http_access deny odd\n"
        )
        os.chmod(config, 0o664)
        run = EntrypointRun(workspace, workspace.env(LOG_LEVEL="DEBUG", CEPHALOPROXY_CONFIG=str(config)))
        wait_for_status(f"http://127.0.0.1:{workspace.health_port}/health", 200, timeout=60)
        with socket.create_connection(("127.0.0.1", workspace.health_port), timeout=10) as client:
            client.sendall(b"GET /health\x1b[2J\x1b]0;owned\x07\r\xc2\x85x HTTP/1.0\r\n\r\n")
            client.recv(4096)
        run.wait_for_output(r"health GET /health\\x1b\[2J", 20)
        _stop(run)
        output = run.stdout + run.stderr
        raw = [repr(char) for char in _CONTROLS if char in output]
        assert not raw, f"raw {raw} in the log:\n{output!r}"
        assert "conf\\x1b[2J\\r\\u0085\\u2028d" in output, output  # the env path, escaped, still readable
        assert ".esc\\x1b[31m.example" in output, output  # the config value (Squid's parse echo)
    finally:
        if run is not None:
            run.cleanup()
        workspace.remove()
