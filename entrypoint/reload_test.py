"""SIGHUP end to end: re-parse first, follow a new port, re-merge a rotated TLS secret, one reload at a time."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entrypoint.health_process import HEALTH_START_TIMEOUT
from entrypoint.reload import refuse_restart_changes
from entrypoint.squid_config import ActiveConfig, ConfigError, Directive
from tests.entrypoint.harness import proxies_through
from tests.entrypoint.testing import (
    EntrypointRun,
    Launcher,
    Workspace,
    free_port,
    http_get,
    key_body_lines,
    make_ca,
    make_server_cert,
    openssl,
    process_state,
    python_for_child,
    running_as_root,
    session_processes,
    squid_bin,
    ssl_bump_config,
    start_local_http_server,
    wait_for_status,
    wait_until,
    with_private_shm,
)

SKIPPED = "Reload skipped, Squid keeps its current config: "


def port_config(workspace: Workspace, port: int) -> str:
    return (
        f"http_port 127.0.0.1:{port}\n"
        f"pid_filename {workspace.runtime_dir('run')}/squid.pid\n"
        "http_access allow localhost\nhttp_access deny all\n"
        "cache_log /dev/stderr\naccess_log stdio:/dev/stdout\nlogfile_rotate 0\n"
        "visible_hostname reload-test\nshutdown_lifetime 1 seconds\npinger_enable off\n"
        "netdb_filename none\n"
    )


def started_on_port_config(
    workspace: Workspace, launch: Launcher, **env: str
) -> tuple[str, EntrypointRun, int]:
    """(the config, the run, Squid's pid) of an entrypoint started and ready on `port_config`."""
    good = port_config(workspace, workspace.squid_port)
    workspace.write_custom_config(good)
    run = launch(workspace.env(**env))
    return good, run, run.wait_ready()


def test_sighup_moves_squid_and_the_readiness_check_to_a_new_port(
    workspace: Workspace, launch: Launcher
) -> None:
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


def test_a_health_server_restarted_by_a_reload_must_report_listening_again(
    workspace: Workspace, launch: Launcher
) -> None:
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
        HEALTH_START_TIMEOUT + 30,
        stream="stderr",
    )
    assert run.process.poll() is None  # a silent server is retried, not fatal
    restored = server.with_suffix(".restored")
    restored.write_text(original)
    restored.replace(server)  # atomically: a restart must never read half a file
    run.wait_for_output(
        rf"Health server restarted \(restart \d+\), listening on port {workspace.health_port}", 30
    )
    assert wait_for_status(f"http://127.0.0.1:{workspace.health_port}/ready", 200, 30) == (
        200,
        "READY\n",
    )
    assert run.process.poll() is None


def test_invalid_config_on_sighup_keeps_squid_and_never_reconfigures(
    workspace: Workspace, launch: Launcher
) -> None:
    good, run, squid_pid = started_on_port_config(workspace, launch)
    workspace.write_custom_config(good + "http_access allow no_such_acl\n")
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(
        r"(?s)Reload skipped, Squid keeps its current config: .*no_such_acl", stream="stderr"
    )
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
def test_sighup_remerges_a_rotated_tls_secret_and_refuses_a_bad_one(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
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
    run.wait_for_output(
        r"Reload skipped, Squid keeps its current config: .*not the private key", stream="stderr"
    )
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


def test_a_storm_of_sighups_runs_one_reload_at_a_time_and_at_most_one_more(
    workspace: Workspace, launch: Launcher
) -> None:
    record = workspace.var / "parses.jsonl"
    record.touch()
    os.chmod(record, 0o666)
    wrapper = workspace.bin / "squid"
    wrapper.write_text(
        PARSE_RECORDER.format(python=python_for_child(), real=str(squid_bin()), record=str(record))
    )
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
        return [tuple(json.loads(line)) for line in record.read_text().splitlines()]

    # Quiet again: no parse ran during the last 2 s.
    assert wait_until(lambda: time.time() - max(end for _, end in parses()) > 2, 60)
    runs = sorted(parses())[1:]  # the first is the startup check
    for (_, end), (start, _) in itertools.pairwise(runs):
        assert start >= end, "two `squid -k parse` ran at the same time"
    # Each parse takes >= 0.3 s: serialized with one pending reload, a 1 s storm allows
    # about (storm / 0.3) + 2 runs; a queue of every SIGHUP would run 100.
    limit = int((storm_ended - storm_started) / 0.3) + 2
    assert 1 <= len(runs) <= limit, f"{len(runs)} reloads for one storm (limit {limit})"
    assert all(start < storm_ended + 1.0 for start, _ in runs[:-1]), (
        "reloads kept running long after the storm"
    )
    assert process_state(squid_pid) not in (None, "Z")
    assert run.stdout.count("Squid reconfigured") == len(runs)
    run.process.send_signal(signal.SIGTERM)
    assert run.wait_exit(60) == 0


# -- refusals: what a reconfigure cannot do ---------------------------------------------------
def outcomes(run: EntrypointRun) -> int:
    """Reloads finished so far (reconfigured or skipped)."""
    return run.stdout.count("Squid reconfigured (PID") + run.stderr.count(SKIPPED)


def reload_and_wait(run: EntrypointRun, timeout: float = 60) -> None:
    before = outcomes(run)
    run.process.send_signal(signal.SIGHUP)
    assert wait_until(lambda: outcomes(run) > before or run.process.poll() is not None, timeout), (
        "the reload never ended"
    )


def test_a_reload_onto_a_port_another_process_holds_is_skipped_and_squid_keeps_its_port(
    workspace: Workspace, launch: Launcher
) -> None:
    workspace.write_custom_config(port_config(workspace, workspace.squid_port))
    run = launch()
    squid_pid = run.wait_ready()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        workspace.write_custom_config(port_config(workspace, taken))
        run.process.send_signal(signal.SIGHUP)
        run.wait_for_output(
            rf"{SKIPPED}port {taken} is in use by another process: free it or choose another http_port",
            30,
            stream="stderr",
        )
        time.sleep(2)  # a reconfigure onto a taken port kills Squid's kid within this
        assert (
            "Squid reconfigured" not in run.stdout
            and "Unable to open HTTP Socket" not in run.stderr
        )
        assert process_state(squid_pid) not in (None, "Z") and proxies_through(workspace.squid_port)
        assert wait_for_status(f"http://127.0.0.1:{workspace.health_port}/ready", 200, 30)[0] == 200
    # Freed, the same config goes through.
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(rf"Squid reconfigured \(PID {squid_pid} kept\)")
    assert wait_until(lambda: proxies_through(taken), 30)
    assert run.process.poll() is None


def test_as_root_squid_rereads_the_snapshot_and_a_taken_port_is_still_refused(
    workspace: Workspace, launch: Launcher
) -> None:
    # As root, Squid's kid runs as another user: its fds cannot be read, and it reads the
    # snapshot (mode 0640, root's) as root on a reconfigure.
    if not running_as_root():
        pytest.skip("needs root to start the entrypoint as 0:0")
    for directory in (workspace.root, workspace.var):
        os.chmod(directory, 0o755)  # like the image: Squid's user must reach the runtime dirs
    conf_d = workspace.make_dir(workspace.etc / "conf.d", 0o775)
    (conf_d / "acl.conf").write_text("acl included src 127.0.0.1\n")
    workspace.share_tree(conf_d)
    include = f"include {conf_d}/*.conf\n"
    workspace.write_custom_config(port_config(workspace, workspace.squid_port) + include)
    run = launch(
        argv=with_private_shm([python_for_child(), str(workspace.bin / "entrypoint.py")]),
        user=(0, 0),
    )
    squid_pid = run.wait_ready()
    moved = free_port()
    workspace.write_custom_config(port_config(workspace, moved) + include)
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(rf"Squid reconfigured \(PID {squid_pid} kept\)")
    assert wait_until(lambda: proxies_through(moved), 30)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        workspace.write_custom_config(port_config(workspace, taken) + include)
        run.process.send_signal(signal.SIGHUP)
        run.wait_for_output(
            rf"{SKIPPED}port {taken} is in use by another process", 30, stream="stderr"
        )
    assert proxies_through(moved) and "FATAL" not in run.output


def test_a_reload_changing_pid_filename_is_skipped_as_needing_a_restart(
    workspace: Workspace, launch: Launcher
) -> None:
    good, run, squid_pid = started_on_port_config(workspace, launch)
    old_pid_file = workspace.runtime_dir("run") / "squid.pid"
    new_pid_file = workspace.runtime_dir("run") / "moved.pid"
    workspace.write_custom_config(good.replace(str(old_pid_file), str(new_pid_file)))
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(
        rf"{SKIPPED}pid_filename changed from {old_pid_file} to {new_pid_file}: Squid keeps writing {old_pid_file}"
        r" until it is restarted, so this needs a restart",
        30,
        stream="stderr",
    )
    # The health server still reads the pid file Squid writes: alive, for as long as we look.
    health = f"http://127.0.0.1:{workspace.health_port}/health"
    for _ in range(6):
        assert http_get(health, timeout=5)[:2] == (200, "OK\n")
        time.sleep(0.5)
    assert "Squid reconfigured" not in run.stdout and process_state(squid_pid) not in (None, "Z")


def test_a_reload_cannot_switch_between_the_packaged_default_and_a_mounted_config(
    workspace: Workspace, launch: Launcher
) -> None:
    run = launch()  # no mounted config: the packaged default on SQUID_PORT
    squid_pid = run.wait_ready()
    mounted_port = free_port()
    workspace.write_custom_config(port_config(workspace, mounted_port))
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(
        rf"{SKIPPED}the config changed from the packaged default {workspace.default_config} to the mounted config"
        rf" {workspace.custom_config}: switching needs a restart",
        30,
        stream="stderr",
    )
    assert proxies_through(workspace.squid_port) and not proxies_through(mounted_port)
    assert "Squid reconfigured" not in run.stdout and process_state(squid_pid) not in (None, "Z")
    run.cleanup()

    # The reverse: started on the mounted config, which then goes away.
    run = launch()
    squid_pid = run.wait_ready()
    workspace.custom_config.unlink()
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(
        rf"{SKIPPED}the config changed from the mounted config {workspace.custom_config} to the packaged default"
        rf" {workspace.default_config}: switching needs a restart",
        30,
        stream="stderr",
    )
    assert proxies_through(mounted_port) and not proxies_through(workspace.squid_port)
    assert "Squid reconfigured" not in run.stdout and process_state(squid_pid) not in (None, "Z")


# -- Squid reads exactly what was checked -----------------------------------------------------
def squid_pids(run: EntrypointRun) -> set[int]:
    """Squid's processes (master and kid) in the run's session."""
    pids = set()
    for pid in session_processes(run.pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == squid_bin().name[:15]:
                pids.add(pid)
        except OSError:
            pass
    return pids


def served_variant(port: int, origin_port: int) -> str | None:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"})
    )
    try:
        with opener.open(f"http://127.0.0.1:{origin_port}/", timeout=10) as response:
            return response.headers.get("X-Variant")
    except OSError:
        return None


def test_a_config_rewritten_during_a_reload_storm_reaches_squid_only_as_checked(
    workspace: Workspace, launch: Launcher
) -> None:
    conf_d = workspace.make_dir(workspace.etc / "conf.d", 0o775)
    variant = conf_d / "variant.conf"

    def write_variant(text: str) -> None:
        with open(variant, "w") as handle:  # in place, as an editor or a careless sync does
            handle.write(text)

    write_variant('reply_header_add X-Variant "start" all\n')
    os.chmod(variant, 0o664)
    main = port_config(workspace, workspace.squid_port) + f"include {conf_d}/*.conf\n"
    workspace.write_custom_config(main)
    run = launch()
    run.wait_ready()
    squids = squid_pids(run)
    assert len(squids) >= 2, "a master and a kid"
    stop = threading.Event()
    writes = 0

    def writer() -> None:
        nonlocal writes
        while not stop.is_set():
            writes += 1
            if writes % 3 == 0:  # momentarily invalid
                write_variant(f"http_access allow no_such_acl_{writes}\n")
            else:
                write_variant(f'reply_header_add X-Variant "v{writes}" all\n')
            if writes % 7 == 0:  # the main config too (same meaning, other bytes)
                workspace.write_custom_config(main + f"# rewrite {writes}\n")
            time.sleep(0.001)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        for _ in range(40):
            reload_and_wait(run)
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    write_variant('reply_header_add X-Variant "final" all\n')
    reload_and_wait(run)
    origin = start_local_http_server("through")
    try:
        assert wait_until(lambda: served_variant(workspace.squid_port, origin.port) == "final", 30)
    finally:
        origin.close()
    reconfigured = run.stdout.count("Squid reconfigured (PID")
    skipped = run.stderr.count(SKIPPED)
    print(f"{writes} writes, {reconfigured} reconfigures, {skipped} reloads skipped")
    assert reconfigured >= 2 and run.process.poll() is None
    # Squid never read a config that was not checked: the running Squid (its kid's lines say
    # `kidN|`; `squid -k parse` lines in a skip message do not) never FATALed or restarted.
    assert not re.search(r"kid\d+\|.*FATAL", run.stderr), run.stderr[-3000:]
    assert squid_pids(run) == squids, "Squid's kid was restarted"
    assert (
        f"{workspace.runtime_dir('run')}/config-" not in run.output
    )  # Squid's messages name the real files


def test_a_bad_included_file_is_named_with_its_line_not_the_snapshot(
    workspace: Workspace, launch: Launcher
) -> None:
    conf_d = workspace.make_dir(workspace.etc / "conf.d", 0o775)
    (conf_d / "10-ok.conf").write_text("acl ok src 127.0.0.1\n")
    main = port_config(workspace, workspace.squid_port) + f"include {conf_d}/*.conf\n"
    workspace.write_custom_config(main)
    workspace.share_tree(conf_d)
    run = launch()
    run.wait_ready()
    (conf_d / "20-bad.conf").write_text("# second line is wrong\nhttp_access allow no_such_acl\n")
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(
        rf"(?s){SKIPPED}.*{conf_d}/20-bad.conf line 2: http_access allow no_such_acl",
        30,
        stream="stderr",
    )
    snapshot_paths = re.compile(rf"{workspace.runtime_dir('run')}/(config-|\.?squid\.conf)")
    assert not snapshot_paths.search(run.output), run.output
    assert f"Processing Configuration File: {conf_d}/10-ok.conf (depth 1)" in run.stderr


# -- include expansion: bounded, off the event loop --------------------------------------------
def test_a_huge_include_fan_out_is_refused_at_reload_and_at_startup(
    workspace: Workspace, launch: Launcher
) -> None:
    conf_d = workspace.make_dir(workspace.etc / "conf.d", 0o775)
    for n in range(1500):
        (conf_d / f"{n:05d}.conf").write_text(f"acl a{n} src 127.0.0.1\n")
    workspace.share_tree(conf_d)
    good, run, squid_pid = started_on_port_config(workspace, launch)
    workspace.write_custom_config(good + f"include {conf_d}/*.conf\n")
    line = good.count("\n") + 1
    sent = time.monotonic()
    run.process.send_signal(signal.SIGHUP)
    message = (
        rf"{SKIPPED}Squid config {workspace.custom_config} line {line}: include {conf_d}/\*.conf: the config and its"
        r" includes come to more than 900 files \(the limit: Squid 7.7 aborts at startup near 1000;"
        r" each inclusion counts\)"
    )
    run.wait_for_output(message, 30, stream="stderr")
    print(f"refused 1500 includes {time.monotonic() - sent:.2f} s after SIGHUP")
    assert process_state(squid_pid) not in (None, "Z") and proxies_through(workspace.squid_port)
    run.cleanup()
    run = launch()
    assert run.wait_exit(60) == 1
    assert (
        re.search(message.removeprefix(SKIPPED), run.stderr) and "Starting Squid" not in run.stdout
    )


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(status.read().split("Threads:")[1].split()[0])


SYS_GLOB = "/sys/*/*/*/*/*/*/*/*/*/*/*/nomatch"  # matches nothing, walks a huge tree


@pytest.mark.skipif(not os.path.isdir("/sys/devices"), reason="needs /sys")
def test_an_include_glob_walking_a_huge_tree_is_skipped_at_reload_and_leaves_no_thread_walking(
    workspace: Workspace, launch: Launcher
) -> None:
    good, run, squid_pid = started_on_port_config(workspace, launch)
    workspace.write_custom_config(good + f"include {SYS_GLOB}\n")
    line = good.count("\n") + 1
    message = (
        rf"{SKIPPED}Squid config {workspace.custom_config} line {line}: include {re.escape(SYS_GLOB)}: expanding the"
        r" include globs visited more than 100000 directory entries \(the limit\)"
    )
    before = _threads(run.pid)
    for count in range(1, 4):
        sent = time.monotonic()
        run.process.send_signal(signal.SIGHUP)
        run.wait_for_output(rf"(?s)(?:{message}.*){{{count}}}", 25, stream="stderr")
        print(f"SIGHUP {count} skipped after {time.monotonic() - sent:.2f} s")
    # The reads ended (no worker left walking): PID 1's threads are back to what they were.
    assert wait_until(lambda: _threads(run.pid) <= before, 10), (before, _threads(run.pid))
    assert "took longer than" not in run.stderr
    assert process_state(squid_pid) not in (None, "Z") and proxies_through(workspace.squid_port)


def _split_line_config(workspace: Workspace, good: str) -> tuple[str, str]:
    """(a config hiding `include hidden.conf` past Squid's 8191-byte line, the message)."""
    hidden = workspace.etc / "hidden.conf"
    hidden.write_text("http_port 127.0.0.1:1\n")
    hidden.chmod(0o644)
    long_line = "#" + "x" * 8190 + f"include {hidden}"
    message = (
        rf"Squid config {workspace.custom_config} line {good.count(chr(10)) + 1}: the line is {len(long_line)} bytes"
        r" long, more than 8190 bytes \(the limit\): Squid would read the rest of it as another line: shorten or split it"
    )
    return good + long_line + "\n", message


def test_a_line_squid_would_split_is_refused_at_reload_and_at_startup(
    workspace: Workspace, launch: Launcher
) -> None:
    good, run, squid_pid = started_on_port_config(workspace, launch)
    config, message = _split_line_config(workspace, good)
    workspace.write_custom_config(config)
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(SKIPPED + message, 30, stream="stderr")
    assert "Squid reconfigured" not in run.stdout
    assert process_state(squid_pid) not in (None, "Z") and proxies_through(workspace.squid_port)
    run.cleanup()
    run = launch()
    assert run.wait_exit(60) == 1
    assert re.search(message, run.stderr) and "Starting Squid" not in run.stdout


def test_a_slow_reload_keeps_relaying_squids_output_and_sigterm_is_handled_at_once(
    workspace: Workspace, launch: Launcher
) -> None:
    good, run, _ = started_on_port_config(workspace, launch)
    # Large but allowed: about 8 MB in 850 files (the limits are 8 MiB and 900 files).
    conf_d = workspace.make_dir(workspace.etc / "conf.d", 0o775)
    body = "acl big src 10.0.0.1\n" * 447
    for n in range(850):
        (conf_d / f"{n:04d}.conf").write_text(body)
    workspace.share_tree(conf_d)
    workspace.write_custom_config(good + f"include {conf_d}/*.conf\n")
    origin = start_local_http_server("during")
    try:
        run.process.send_signal(signal.SIGHUP)
        run.wait_for_output(r"Received signal SIGHUP, reloading the config")
        time.sleep(0.05)  # the include tree is being read now (about 1.3 s of work here)
        # Squid's access log line (its stdout) is relayed meanwhile.
        asked = time.monotonic()
        proxy = f"http://127.0.0.1:{workspace.squid_port}"
        assert http_get(f"http://127.0.0.1:{origin.port}/during", timeout=10, proxy=proxy)[:2] == (
            200,
            "during",
        )
        run.wait_for_output(rf"GET http://127\.0\.0\.1:{origin.port}/during", 30)
        relay = time.monotonic() - asked
    finally:
        origin.close()
    still_reading = "Reloading: checking Squid config" not in run.stdout
    sent = time.monotonic()
    run.process.send_signal(signal.SIGTERM)
    run.wait_for_output(r"Received signal SIGTERM, initiating graceful shutdown", 30)
    handled = time.monotonic() - sent
    code = run.wait_exit(30)
    stopped = time.monotonic() - sent
    print(
        f"access log relayed {relay:.2f} s after the request; SIGTERM handled after {handled:.2f} s, exit after {stopped:.2f} s"
    )
    assert relay < 0.5, f"Squid's output waited {relay:.2f} s for the include expansion"
    assert handled < 0.5, f"SIGTERM waited {handled:.2f} s for the include expansion"
    assert still_reading, "the include tree was read before the SIGTERM: make it larger"
    assert "Squid reconfigured" not in run.stdout
    assert code == 0 and stopped < 10
    assert run.descendants_left() == []


# -- nothing unexpected ends PID 1 --------------------------------------------------------------
@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_an_unexpected_reload_error_is_one_line_and_squid_keeps_serving(
    workspace: Workspace, launch: Launcher, level: str
) -> None:
    good, run, squid_pid = started_on_port_config(workspace, launch, LOG_LEVEL=level)
    # A fault nobody foresaw: the module SSL-bump needs (imported at its first use) is broken.
    tls_module = workspace.lib / "entrypoint" / "tls.py"
    original = tls_module.read_text()
    tls_module.write_text('raise RuntimeError("planted fault \\x1b[31m in the TLS module")\n')
    workspace.write_custom_config(good + "ssl_bump splice all\n")
    run.process.send_signal(signal.SIGHUP)
    match = run.wait_for_output(rf"{SKIPPED}unexpected error RuntimeError: .*", 30, stream="stderr")
    assert (
        match.group(0)
        == f"{SKIPPED}unexpected error RuntimeError: planted fault \\x1b[31m in the TLS module"
    )
    if level == "DEBUG":  # the traceback too, at DEBUG only
        run.wait_for_output(
            r"The unexpected error:\\n.*Traceback.*RuntimeError: planted fault \\x1b"
        )
    assert ("Traceback" in run.output) == (level == "DEBUG")
    assert process_state(squid_pid) not in (None, "Z") and proxies_through(workspace.squid_port)
    # A port of 5000 digits: a ConfigError or an unexpected error, never the end of PID 1.
    workspace.write_custom_config(
        good.replace(f"127.0.0.1:{workspace.squid_port}", "127.0.0.1:" + "9" * 5000)
    )
    reload_and_wait(run)
    assert run.stderr.count(SKIPPED) == 2 and ("Traceback" in run.output) == (level == "DEBUG")
    # Reloads still work.
    restored = tls_module.with_suffix(".restored")
    restored.write_text(original)
    restored.replace(tls_module)
    workspace.write_custom_config(good)
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(rf"Squid reconfigured \(PID {squid_pid} kept\)")
    assert run.process.poll() is None and "\x1b" not in run.output


def test_a_reload_adding_a_disk_cache_dir_prepares_it_and_a_changed_one_needs_a_restart(
    workspace: Workspace, launch: Launcher
) -> None:
    # Squid's reconfigure never runs -z: an unprepared new cache_dir killed the kid (swap.state).
    good, run, squid_pid = started_on_port_config(workspace, launch)
    added = workspace.runtime_dir("added-cache") / "ufs"  # not there yet: made like at startup
    with_cache = good + f"cache_dir ufs {added} 10 4 8\n"
    workspace.write_custom_config(with_cache)
    reload_and_wait(run)
    assert "Squid reconfigured" in run.stdout, run.stderr[-2000:]
    assert (added / "00").is_dir() and (added / "03").is_dir()
    time.sleep(3)  # a kid failing on the new cache_dir dies within this
    assert "FATAL" not in run.stderr and run.process.poll() is None
    assert process_state(squid_pid) not in (None, "Z") and proxies_through(workspace.squid_port)
    assert wait_for_status(f"http://127.0.0.1:{workspace.health_port}/health", 200, 30)[0] == 200
    # Other L1/L2 (or type) under the same path: Squid cannot take it at a reconfigure.
    for changed in ("ufs 10 8 8", "aufs 10 4 8"):
        workspace.write_custom_config(
            good + f"cache_dir {changed.replace(' 10', f' {added} 10')}\n"
        )
        run.process.send_signal(signal.SIGHUP)
        to = changed.replace(" 10", "")
        run.wait_for_output(
            rf"{SKIPPED}cache_dir {added} changed from ufs 4 8 to {to}: .*needs a restart",
            30,
            stream="stderr",
        )
    assert run.stdout.count("Squid reconfigured") == 1
    # Dropped and added back (made already: no second -z), Squid keeps running.
    for text in (good, with_cache):
        workspace.write_custom_config(text)
        reload_and_wait(run)
    assert (
        run.stdout.count("Squid reconfigured") == 3
        and run.stdout.count("Initialising Squid cache") == 1
    )
    time.sleep(2)
    assert (
        "FATAL" not in run.stderr
        and process_state(squid_pid) not in (None, "Z")
        and proxies_through(workspace.squid_port)
    )


def unprivileged_port_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def test_a_privileged_port_is_refused_at_reload_and_at_startup_when_not_root(
    workspace: Workspace, launch: Launcher
) -> None:
    if not running_as_root():
        pytest.skip(
            "needs root to run the entrypoint as the unprivileged UID"
        )  # the default launch user
    start = unprivileged_port_start()
    if start == 0:
        pytest.skip("every port is unprivileged here")
    _good, run, squid_pid = started_on_port_config(workspace, launch)
    for port in sorted({1, 80, start - 1}):
        workspace.write_custom_config(port_config(workspace, port))
        run.process.send_signal(signal.SIGHUP)
        run.wait_for_output(
            rf"{SKIPPED}port {port} is privileged \(below ip_unprivileged_port_start {start}\)"
            rf" and UID 1000660000 may not bind it: ",
            30,
            stream="stderr",
        )
    time.sleep(2)  # a reconfigure onto the port kills Squid's kid within this
    assert "Squid reconfigured" not in run.stdout and "FATAL" not in run.stderr
    assert process_state(squid_pid) not in (None, "Z") and proxies_through(workspace.squid_port)
    run.process.send_signal(signal.SIGTERM)
    run.wait_exit(30)
    # At startup: exit 1 with the same reason, before Squid is started.
    workspace.write_custom_config(port_config(workspace, 80))
    second = launch()
    assert second.wait_exit(60) == 1
    assert re.search(
        r"port 80 is privileged \(below ip_unprivileged_port_start \d+\) and UID 1000660000 may not bind it",
        second.output,
    )
    assert "Starting Squid proxy" not in second.output and "FATAL" not in second.output


@pytest.mark.skipif(
    openssl() is None, reason="the openssl CLI is needed to make the test certificates"
)
def test_the_health_checks_follow_an_https_port_when_there_is_no_http_port(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
    certs = workspace.make_dir(workspace.etc / "certs")
    ca, ca_key = make_ca(certs, "Listen CA")
    cert, key = make_server_cert(certs, ca, ca_key, "proxy.test")
    workspace.share_tree(certs)
    https_only = port_config(workspace, workspace.squid_port).replace(
        f"http_port 127.0.0.1:{workspace.squid_port}",
        f"https_port 127.0.0.1:{free_port()} tls-cert={cert} tls-key={key}",
    )
    workspace.write_custom_config(https_only)
    # SQUID_PORT is free: checks falling back to it fail, checks of the https_port pass.
    run = launch()
    run.wait_ready()
    base = f"http://127.0.0.1:{workspace.health_port}"
    assert wait_for_status(f"{base}/ready", 200, 30) == (200, "READY\n")
    time.sleep(11)  # /health fails once the proxy port has been unreachable for 10 s
    assert http_get(f"{base}/health", timeout=5)[:2] == (200, "OK\n")
    assert http_get(f"{base}/ready", timeout=5)[:2] == (200, "READY\n")
    assert run.process.poll() is None


_store = st.tuples(
    st.sampled_from(["ufs", "aufs", "diskd", "rock"]),
    st.integers(1, 10_000).map(str),  # the size: Squid takes a new one on a reconfigure
    st.integers(1, 256).map(str),
    st.integers(1, 256).map(str),
)


@given(_store, _store)
def test_only_a_cache_dirs_type_or_l1_l2_change_needs_a_restart(
    before: tuple[str, ...], after: tuple[str, ...]
) -> None:
    def config(store: tuple[str, ...]) -> ActiveConfig:
        kind, size, l1, l2 = store
        args = (kind, "/cache/one", size) + (() if kind == "rock" else (l1, l2))
        return ActiveConfig(
            Path("/run/squid.conf"),
            Path("/etc/squid.conf"),
            True,
            (Directive(1, "cache_dir", args),),
        )

    def layout(store: tuple[str, ...]) -> tuple[str, ...]:
        return ("rock",) if store[0] == "rock" else (store[0], *store[2:])

    same = layout(before) == layout(after)
    try:
        refuse_restart_changes(config(after), config(before))
    except ConfigError as error:
        assert (
            not same
            and str(error).startswith("cache_dir /cache/one changed from ")
            and "needs a restart" in str(error)
        )
    else:
        assert same
