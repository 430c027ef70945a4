"""SIGHUP end to end: re-parse first, follow a new port, re-merge a rotated TLS secret, one reload at a time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from entrypoint.health_process import HEALTH_START_TIMEOUT
from entrypoint.testing import (  # noqa: F401 - fixtures
    Launcher, Workspace, free_port, http_get, key_body_lines, launch, make_ca, openssl,
    process_state, python_for_child, squid_available, squid_bin, ssl_bump_config,
    start_local_http_server, wait_for_status, wait_until, workspace,
)


def port_config(workspace: Workspace, port: int) -> str:
    return (
        f"http_port 127.0.0.1:{port}\n"
        f"pid_filename {workspace.runtime_dir('run')}/squid.pid\n"
        "http_access allow localhost\nhttp_access deny all\n"
        "cache_log /dev/stderr\naccess_log stdio:/dev/stdout\nlogfile_rotate 0\n"
        "visible_hostname reload-test\nshutdown_lifetime 1 seconds\npinger_enable off\n"
        "netdb_filename none\n"
    )


def proxies_through(port: int) -> bool:
    origin = start_local_http_server("through")
    try:
        return http_get(f"http://127.0.0.1:{origin.port}/", timeout=10, proxy=f"http://127.0.0.1:{port}")[:2] == (200, "through")
    except OSError:
        return False
    finally:
        origin.close()


def test_sighup_moves_squid_and_the_readiness_check_to_a_new_port(workspace: Workspace, launch: Launcher) -> None:
    workspace.write_custom_config(port_config(workspace, workspace.squid_port))
    run = launch()
    squid_pid = run.wait_ready()
    ready = f"http://127.0.0.1:{workspace.health_port}/ready"
    assert wait_for_status(ready, 200)[0] == 200
    new_port = free_port()
    workspace.write_custom_config(port_config(workspace, new_port))
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(rf"Squid reconfigured \(PID {squid_pid} kept\)")
    # Squid left the old port; /ready is only 200 again if it checks the new one.
    assert wait_until(lambda: proxies_through(new_port), 30)
    assert wait_for_status(ready, 200, 30) == (200, "READY\n")
    assert not proxies_through(workspace.squid_port)
    assert process_state(squid_pid) not in (None, "Z")


def test_a_health_server_restarted_by_a_reload_must_report_listening_again(workspace: Workspace, launch: Launcher) -> None:
    workspace.write_custom_config(port_config(workspace, workspace.squid_port))
    run = launch()
    run.wait_ready()
    # From now on the entrypoint's copy of the server stops itself before it binds (a hung child).
    server = workspace.lib / "entrypoint" / "healthcheck_cli.py"
    original = server.read_text()
    server.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\n")
    workspace.write_custom_config(port_config(workspace, free_port()))
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(r"Health server follows the new config \(restarting it\)")
    run.wait_for_output(
        rf"Health server restart failed: Health server did not report listening on HEALTH_PORT"
        rf" {workspace.health_port} within {HEALTH_START_TIMEOUT:g} s \(it was killed\); restart 1 in 0.5 s",
        HEALTH_START_TIMEOUT + 30, stream="stderr",
    )
    assert run.process.poll() is None  # a silent server is retried, not fatal
    restored = server.with_suffix(".restored")
    restored.write_text(original)
    restored.replace(server)  # atomically: a restart must never read half a file
    run.wait_for_output(rf"Health server restarted \(restart \d+\), listening on port {workspace.health_port}", 30)
    assert wait_for_status(f"http://127.0.0.1:{workspace.health_port}/ready", 200, 30) == (200, "READY\n")
    assert run.process.poll() is None


def test_invalid_config_on_sighup_keeps_squid_and_never_reconfigures(workspace: Workspace, launch: Launcher) -> None:
    good = port_config(workspace, workspace.squid_port)
    workspace.write_custom_config(good)
    run = launch()
    squid_pid = run.wait_ready()
    workspace.write_custom_config(good + "http_access allow no_such_acl\n")
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(r"(?s)Reload skipped, Squid keeps its current config: .*no_such_acl", stream="stderr")
    time.sleep(2)  # a reconfigure would have been logged by Squid by now
    assert "Reconfiguring Squid Cache" not in run.stderr
    assert "Squid reconfigured" not in run.stdout
    assert process_state(squid_pid) not in (None, "Z") and proxies_through(workspace.squid_port)
    # The same check sees a real reconfigure once the config is valid again.
    workspace.write_custom_config(good)
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(rf"Squid reconfigured \(PID {squid_pid} kept\)")
    run.wait_for_output(r"Reconfiguring Squid Cache", 30, stream="stderr")


@pytest.mark.skipif(openssl() is None, reason="the openssl CLI is needed to make the test CAs")
def test_sighup_remerges_a_rotated_tls_secret_and_refuses_a_bad_one(workspace: Workspace, launch: Launcher, tmp_path: Path) -> None:
    first, second = make_ca(tmp_path, "First CA"), make_ca(tmp_path, "Second CA")
    workspace.make_dir(workspace.tls_dir, 0o775)

    def mount(cert: Path, key: Path) -> None:
        for source, name in ((cert, "tls.crt"), (key, "tls.key")):
            shutil.copy(source, workspace.tls_dir / name)
            os.chmod(workspace.tls_dir / name, 0o664)

    merged = workspace.runtime_dir("lib") / "squid-ca.pem"
    mount(*first)
    workspace.write_custom_config(ssl_bump_config(workspace))
    run = launch()
    squid_pid = run.wait_ready()
    assert merged.read_bytes() == first[0].read_bytes() + first[1].read_bytes()
    mount(*second)
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(rf"Squid reconfigured \(PID {squid_pid} kept\)")
    assert merged.read_bytes() == second[0].read_bytes() + second[1].read_bytes()
    assert oct(merged.stat().st_mode & 0o777) == "0o600"
    # A mismatched pair: refused, the merged file and Squid stay as they were.
    mount(second[0], first[1])
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(r"Reload skipped, Squid keeps its current config: .*not the private key", stream="stderr")
    assert merged.read_bytes() == second[0].read_bytes() + second[1].read_bytes()
    assert run.stdout.count("Squid reconfigured") == 1
    for key in (first[1], second[1]):
        assert not any(line in run.output for line in key_body_lines(key))


# A stand-in for the Squid binary: records each `-k parse` run (start, end) and makes it slow,
# everything else is the real Squid (exec, so pids and process names are Squid's own).
PARSE_RECORDER = """#!{python}
import json, os, subprocess, sys, time
REAL, RECORD = {real!r}, {record!r}
args = sys.argv[1:]
if args[:2] == ["-k", "parse"]:
    started = time.time()
    time.sleep(0.3)
    code = subprocess.call([REAL, *args])
    with open(RECORD, "a") as handle:
        handle.write(json.dumps([started, time.time()]) + "\\n")
    sys.exit(code)
os.execv(REAL, [REAL, *args])
"""


def test_a_storm_of_sighups_runs_one_reload_at_a_time_and_at_most_one_more(workspace: Workspace, launch: Launcher) -> None:
    record = workspace.var / "parses.jsonl"
    record.touch()
    os.chmod(record, 0o666)
    wrapper = workspace.bin / "squid"
    wrapper.write_text(PARSE_RECORDER.format(python=python_for_child(), real=str(squid_bin()), record=str(record)))
    os.chmod(wrapper, 0o775)
    workspace.write_custom_config(port_config(workspace, workspace.squid_port))
    run = launch(workspace.env(CEPHALOPROXY_SQUID_BIN=str(wrapper)))
    squid_pid = run.wait_ready()
    storm_started = time.time()
    for _ in range(100):  # 100 SIGHUPs within a second
        run.process.send_signal(signal.SIGHUP)
        time.sleep(0.01)
    storm_ended = time.time()

    def parses() -> list[tuple[float, float]]:
        return [tuple(json.loads(line)) for line in record.read_text().splitlines()]  # type: ignore[misc]

    # Quiet again: no parse ran during the last 2 s.
    assert wait_until(lambda: time.time() - max(end for _, end in parses()) > 2, 60)
    runs = sorted(parses())[1:]  # the first is the startup check
    for (_, end), (start, _) in zip(runs, runs[1:]):
        assert start >= end, "two `squid -k parse` ran at the same time"
    # Each parse takes >= 0.3 s: serialized with one pending reload, a 1 s storm allows
    # about (storm / 0.3) + 2 runs; a queue of every SIGHUP would run 100.
    limit = int((storm_ended - storm_started) / 0.3) + 2
    assert 1 <= len(runs) <= limit, f"{len(runs)} reloads for one storm (limit {limit})"
    assert all(start < storm_ended + 1.0 for start, _ in runs[:-1]), "reloads kept running long after the storm"
    assert process_state(squid_pid) not in (None, "Z")
    assert run.stdout.count("Squid reconfigured") == len(runs)
    run.process.send_signal(signal.SIGTERM)
    assert run.wait_exit(60) == 0
