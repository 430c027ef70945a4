"""LOG_FORMAT=json end to end, real entrypoint and Squid 7.7: every line PID 1 writes in a full
start / proxied requests / reload / kid crash / rejected reload / stop cycle is a JSON object
with the fields, no secret and no raw control character; the access log line of a request with
credentials in its URL has the fields and not the credentials; a bad LOG_FORMAT is refused."""

from __future__ import annotations

import json
import os
import signal
import socket

from entrypoint.log_json_test import parsed_line
from entrypoint.logs import RECORD_LIMIT
from tests.entrypoint.harness import (
    Workspace,
    children_of,
    start_local_http_server,
    wait_for_status,
    wait_until,
)
from tests.entrypoint.testing import Launcher

SECRETS = {"login": "xQ1Qlogin", "cachemgr": "xQ2Qcachemgr", "url": "xQ3Qurl", "ldap": "xQ4Qldap"}
URL_PASSWORD, QUERY_TOKEN = "xQ5Qurlpass", "xQ6Qquery"


def _broken_config_with_secrets(workspace: Workspace) -> str:
    """A mounted config that `squid -k parse` refuses (a bad port), secrets in four forms."""
    return "\n".join(
        [
            f"http_port 127.0.0.1:{workspace.squid_port}",
            f"pid_filename {workspace.runtime_dir('run')}/squid.pid",
            "http_access allow localhost",
            "http_access deny all",
            "cache_log /dev/stderr",
            "access_log stdio:/dev/stdout",
            "logfile_rotate 0",
            f"cachemgr_passwd {SECRETS['cachemgr']} all",
            f"cache_peer 127.0.0.1 parent notaport 0 no-query name=p1 login=u:{SECRETS['login']}",
            f"url_rewrite_program /bin/true http://bob:{SECRETS['url']}@host.example/",
            f"auth_param basic program /usr/lib/squid/basic_ldap_auth -b dc=x -w {SECRETS['ldap']} -h 127.0.0.1",
        ]
    )


def _proxy(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        client.sendall(request)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _kill_a_kid(squid_pid: int) -> int:
    """SIGKILL Squid's worker (the master's child); the master starts another (it says so only
    to syslog, which a container lacks: the new kid's cache.log lines are what the log shows)."""
    assert wait_until(lambda: children_of(squid_pid), 30), f"Squid (PID {squid_pid}) has no kid"
    kid = min(children_of(squid_pid))
    try:
        os.kill(kid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return kid


def test_every_line_of_a_full_cycle_is_json(launch: Launcher, workspace: Workspace) -> None:
    origin = start_local_http_server("origin body")
    try:
        run = launch(workspace.env(LOG_FORMAT="json", LOG_LEVEL="DEBUG"))
        squid_pid = run.wait_ready()
        health = f"http://127.0.0.1:{workspace.health_port}/health"
        assert wait_for_status(health, 200, 60)[0] == 200, run.output
        target = f"127.0.0.1:{origin.port}"
        answer = _proxy(
            workspace.squid_port,
            (
                f"GET http://alice:{URL_PASSWORD}@{target}/page?token={QUERY_TOKEN} HTTP/1.1\r\n"
                f"Host: {target}\r\nConnection: close\r\n\r\n"
            ).encode(),
        )
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        # A hostile client: quotes, backslashes, control and non-UTF-8 bytes in the request line.
        _proxy(
            workspace.squid_port,
            b"GET http://" + target.encode() + b'/a"b\\c\x01\x1b[2J\xff\xfe HTTP/1.1\r\n'
            b'Host: x"\\\x07\r\nConnection: close\r\n\r\n',
        )
        run.wait_for_output(r'"url":"http://127\.0\.0\.1:\d+/page', 30)
        run.process.send_signal(signal.SIGHUP)
        run.wait_for_output(r"Squid reconfigured \(PID \d+ kept\)", 60)
        kid = _kill_a_kid(squid_pid)
        run.wait_for_output(rf'"kid":1,"message":"Process ID (?!{kid}")\d+"', 60, stream="stderr")
        assert wait_for_status(health, 200, 60)[0] == 200, run.output
        workspace.write_custom_config(_broken_config_with_secrets(workspace))
        run.process.send_signal(signal.SIGHUP)
        run.wait_for_output(r"Reload skipped, Squid keeps its current config", 60, stream="stderr")
        run.process.send_signal(signal.SIGTERM)
        assert run.wait_exit(60) == 0, run.output
    finally:
        origin.close()

    lines = [
        (name, line)
        for name, text in (("stdout", run.stdout), ("stderr", run.stderr))
        for line in text.splitlines()
    ]
    objects = []
    for stream, line in lines:
        try:
            objects.append(
                parsed_line(line, RECORD_LIMIT if '"source":"entrypoint"' in line else 64 * 1024)
            )
        except (AssertionError, ValueError, KeyError) as error:
            raise AssertionError(
                f"{stream} line is not a valid JSON log line ({error!r}): {line!r}"
            ) from None
    text = run.stdout + run.stderr
    decoded = json.dumps(objects, ensure_ascii=False)
    leaked = [
        s for s in [*SECRETS.values(), URL_PASSWORD, QUERY_TOKEN] if s in text or s in decoded
    ]
    assert not leaked, f"{leaked} leaked:\n{text}"

    sources = {fields["source"] for fields in objects}
    assert {"entrypoint", "squid-cache", "squid-access", "health-server"} <= sources, sources
    started = [f for f in objects if str(f.get("message", "")).startswith("Squid started with PID")]
    assert started and started[0]["pid"] == squid_pid, started
    assert any(f.get("signal") == "SIGHUP" or "SIGHUP" in str(f.get("message")) for f in objects)
    skipped = [f for f in objects if "Reload skipped" in str(f.get("message", ""))]
    assert skipped and skipped[0]["level"] == "ERROR", skipped
    stopped = [f for f in objects if str(f.get("message", "")).startswith("Squid stopped")]
    assert stopped and ("exit_code" in stopped[0] or "signal" in stopped[0]), stopped
    assert any(f.get("signal") == "SIGTERM" for f in objects), "the stop signal as a field"

    refused = [f for f in objects if f["source"] == "squid-access" and f.get("status") == 400]
    assert refused, (
        "the hostile request's access line"
    )  # Squid refused it; its line is still one object
    access = [f for f in objects if f["source"] == "squid-access" and "/page" in str(f.get("url"))]
    assert len(access) == 1, access
    (entry,) = access
    assert entry["client"] == "127.0.0.1" and entry["method"] == "GET" and entry["status"] == 200, (
        entry
    )
    assert entry["url"] == f"http://{target}/page?", entry  # no userinfo, no query terms
    assert isinstance(entry["bytes"], int) and entry["bytes"] > 0, entry
    assert isinstance(entry["duration_ms"], int) and entry["hierarchy"] == "HIER_DIRECT", entry


def test_squid_dying_is_a_json_record_with_the_signal(
    launch: Launcher,
    workspace: Workspace,
) -> None:
    run = launch(workspace.env(LOG_FORMAT="json"))
    squid_pid = run.wait_ready()
    os.kill(squid_pid, signal.SIGKILL)
    assert run.wait_exit(60) == 1, run.output
    objects = [parsed_line(line) for line in run.stderr.splitlines()]
    died = [
        f
        for f in objects
        if str(f.get("message", "")).startswith("Squid process died unexpectedly")
    ]
    assert died and (died[0]["level"], died[0]["signal"]) == ("ERROR", "SIGKILL"), died
    assert all(parsed_line(line) for line in run.stdout.splitlines())


def test_a_bad_log_format_is_refused_naming_the_variable(
    launch: Launcher,
    workspace: Workspace,
) -> None:
    run = launch(workspace.env(LOG_FORMAT="yaml\x1b[2J"))
    assert run.wait_exit(30) != 0
    assert "Invalid LOG_FORMAT='yaml\\x1b[2J': expected one of text, json" in run.stderr, run.stderr
    assert "\x1b" not in run.output and "Starting Squid" not in run.output, run.output
