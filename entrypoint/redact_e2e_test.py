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
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from entrypoint.harness import (
    EntrypointRun,
    Workspace,
    http_get,
    python_for_child,
    wait_for_status,
    wait_until,
)
from entrypoint.testing import squid_available  # noqa: F401 - fixture

# One Squid word: no whitespace, quote, backslash, # or % (and no parentheses: Squid 7 reads
# name(...) as a function call).
_CHARS = string.ascii_letters + string.digits + "!*+-.:;<=>?@[]^_{|}~,&"
_URL_SAFE = string.ascii_letters + string.digits + "-._~!*+"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _secret(form: str, chars: str = _CHARS) -> st.SearchStrategy[str]:
    """A distinctive secret: "xQ", the form's number (a leak names its form), then anything."""
    return st.text(alphabet=chars, min_size=4, max_size=10).map(
        lambda text: f"xQ{_FORMS.index(form)}Q{text}"
    )


_FORMS = (
    "login_a",
    "login_b",
    "quoted_1",
    "quoted_2",
    "cachemgr",
    "dsn_1",
    "dsn_2",
    "ldap_w",
    "sql_dsn",
    "sql_password",
    "url",
    "authorization",
)


def _any_case(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(word, upper))
    )


@st.composite
def secret_configs(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, str]]:
    """(the secrets, by form; option names as written, in generated case)."""
    slashless = _CHARS.replace("/", "")
    chars = {
        "cachemgr": _URL_SAFE,
        "dsn_1": slashless,
        "dsn_2": slashless,
        "sql_dsn": _CHARS.replace(";", ""),
    }
    # login=u:A,B (the part after , leaked); login="u:ONE TWO"; daemon:/h/d/t/u/ONE/TWO; -wSECRET;
    # --dsn "...;password=SECRET" --PassWord SECRET; http://bob:SECRET@; Authorization "Basic SECRET".
    secrets = {form: draw(_secret(form, chars.get(form, _CHARS))) for form in _FORMS}
    names = {"login": draw(_any_case("login")), "password": draw(_any_case("password"))}
    return secrets, names


def _pieces(secrets: dict[str, str]) -> list[str]:
    return list(secrets.values())


def _write_script(path: Path, body: str) -> Path:
    path.write_text(f"#!{python_for_child()}\nimport sys\n{body}")
    os.chmod(path, 0o775)
    return path


def _stand_in_helpers(workspace: Workspace) -> Path:
    """Helpers named as Squid 7.7's bundled ones (not all are in the image; these never start:
    startup=0, no request needs them) and a logfile_daemon that says which log it writes, as
    log_db_daemon's DSN echoed by a child."""
    helpers = workspace.make_dir(workspace.root / "helpers", 0o775)
    for name in ("basic_ldap_auth", "ext_sql_session_acl", "url_fake_rewrite"):
        _write_script(helpers / name, "for line in sys.stdin: print('ERR', flush=True)\n")
    _write_script(
        helpers / "log_db_daemon",
        "print('logd: writing to', sys.argv[1], file=sys.stderr, flush=True)\nfor _ in sys.stdin.buffer: pass\n",
    )
    return helpers


def secret_config(
    workspace: Workspace, secrets: dict[str, str], names: dict[str, str], broken: bool
) -> str:
    helpers = _stand_in_helpers(workspace)
    s = secrets
    lines = [
        f"http_port 127.0.0.1:{workspace.squid_port}",
        f"pid_filename {workspace.runtime_dir('run')}/custom.pid",
        "http_access allow localhost",
        "http_access deny all",
        "cache_log /dev/stderr",
        "access_log stdio:/dev/stdout",
        "logfile_rotate 0",
        "visible_hostname redact-test",
        "shutdown_lifetime 1 seconds",
        "pinger_enable off",
        "netdb_filename none",
        f"cache_peer 127.0.0.1 parent 9 0 no-query name=p1 {names['login']}=u:{s['login_a']},{s['login_b']}",
        f'cache_peer 127.0.0.1 parent 9 0 no-query name=p2 login="u:{s["quoted_1"]} {s["quoted_2"]}"',
        f"cachemgr_passwd {s['cachemgr']} all",
        f"logfile_daemon {helpers}/log_db_daemon",
        f"access_log daemon:/db.example/squid/log/logger/{s['dsn_1']}/{s['dsn_2']} squid",
        f"auth_param basic program {helpers}/basic_ldap_auth -b dc=x -D cn=admin -w{s['ldap_w']} -h 127.0.0.1",
        "auth_param basic children 1 startup=0 idle=1",
        f"external_acl_type sess children-startup=0 %SRC {helpers}/ext_sql_session_acl"
        f' --dsn "DBI:mysql:database=squid;password={s["sql_dsn"]}" --{names["password"]} {s["sql_password"]}',
        f"url_rewrite_program {helpers}/url_fake_rewrite http://bob:{s['url']}@host.example/",
        "url_rewrite_children 1 startup=0 idle=1",
        f'request_header_add Authorization "Basic {s["authorization"]}" all',
    ]
    if broken:
        lines.append(
            f"cache_peer 127.0.0.1 parent notaport 0 no-query name=p3 login=u:{s['login_a']}"
        )
    return "\n".join(lines) + "\n"


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _stop(run: EntrypointRun) -> None:
    run.process.send_signal(signal.SIGTERM)
    run.wait_exit(60)


@pytest.mark.parametrize("broken", [False, True], ids=["valid", "rejected"])
@pytest.mark.parametrize("level", LEVELS)
# Each example runs the entrypoint and Squid (seconds): a few examples, and no shrinking (a
# failure's output already names the leaked secret and the line it leaked in).
@settings(
    max_examples=3,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=secret_configs())
def test_no_generated_secret_reaches_the_log(
    squid_available: None,
    level: str,
    broken: bool,
    case: tuple[dict[str, str], dict[str, str]],  # noqa: F811
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
            assert (
                wait_for_status(f"http://127.0.0.1:{workspace.health_port}/health", 200, 60)[0]
                == 200
            ), run.output
            # A cachemgr request carries the password in its URL, into the access log on stdout.
            assert wait_until(lambda: _accepts(workspace.squid_port), 30), run.output
            http_get(
                f"http://127.0.0.1:{workspace.squid_port}/squid-internal-mgr/menu@{secrets['cachemgr']}"
            )
            _stop(run)
        output = run.stdout + run.stderr
        leaked = [piece for piece in _pieces(secrets) if piece in output]
        assert not leaked, f"{leaked} leaked at LOG_LEVEL={level}:\n{output}"
        if level == "DEBUG":  # the parse echo was there, redacted, directive names kept
            assert re.search(
                r"cache_peer 127\.0\.0\.1 parent 9 0 no-query name=p1 login=<redacted>",
                output,
                re.I,
            ), output
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
        run = EntrypointRun(
            workspace, workspace.env(LOG_LEVEL="DEBUG", CEPHALOPROXY_CONFIG=str(config))
        )
        assert (
            wait_for_status(f"http://127.0.0.1:{workspace.health_port}/health", 200, 60)[0] == 200
        ), run.output
        with socket.create_connection(("127.0.0.1", workspace.health_port), timeout=10) as client:
            client.sendall(b"GET /health\x1b[2J\x1b]0;owned\x07\r\xc2\x85x HTTP/1.0\r\n\r\n")
            client.recv(4096)
        run.wait_for_output(r"health GET /health", 20)
        _stop(run)
        output = run.stdout + run.stderr
        raw = [repr(char) for char in _CONTROLS if char in output]
        assert not raw, f"raw {raw} in the log:\n{output!r}"
        assert "conf\\x1b[2J\\r\\u0085\\u2028d" in output, (
            output
        )  # the env path, escaped, still readable
        assert ".esc\\x1b[31m.example" in output, output  # the config value (Squid's parse echo)
    finally:
        if run is not None:
            run.cleanup()
        workspace.remove()
