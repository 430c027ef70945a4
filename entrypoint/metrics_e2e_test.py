"""/metrics of the real entrypoint against the real Squid 7.7: exact counters, a real parser, and scrapes that never hurt the probes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from entrypoint.metrics_route import SCRAPE_DEADLINE
from entrypoint.proc_table import process_tree
from tests.entrypoint.harness import EntrypointRun, entrypoint_with_rlimit
from tests.entrypoint.metrics_testing import Series, parse_exposition
from tests.entrypoint.testing import (
    Launcher,
    Workspace,
    free_port,
    http_get,
    make_ca,
    make_server_cert,
    process_state,
    start_local_http_server,
    start_slow_origin,
    wait_for_status,
    wait_until,
)

# Slack on top of a contract bound for a loaded 2-core machine (not a speed goal).
SLACK = 5.0
PROBE_BOUND = (
    2.0  # /health and /ready answer within this while scrapes misbehave (they answer in ms)
)


def scrape(base: str) -> tuple[Series, dict[str, str], str]:
    status, body, headers = http_get(f"{base}/metrics", timeout=SCRAPE_DEADLINE + SLACK)
    assert status == 200, body
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    series, types = parse_exposition(body)
    return series, types, body


def value(series: Series, name: str, **labels: str) -> float:
    return series[(name, tuple(sorted(labels.items())))]


def ready(workspace: Workspace, launch: Launcher, **env: str) -> tuple[EntrypointRun, str, str]:
    run = launch(workspace.env(**env))
    run.wait_ready()
    base = f"http://127.0.0.1:{workspace.health_port}"
    assert wait_for_status(f"{base}/ready", 200) == (200, "READY\n")
    return run, base, f"http://127.0.0.1:{workspace.squid_port}"


def timed_get(url: str) -> tuple[int, float]:
    started = time.monotonic()
    status = http_get(url, timeout=PROBE_BOUND + SLACK)[0]
    return status, time.monotonic() - started


def test_counters_move_by_exactly_the_requests_sent(workspace: Workspace, launch: Launcher) -> None:
    run, base, proxy = ready(workspace, launch)
    origin = start_local_http_server("cacheable", cache_control="public, max-age=600")
    try:
        # What one scrape itself adds (its own manager requests), measured between two scrapes.
        first, _, _ = scrape(base)
        second, _, _ = scrape(base)
        own = value(second, "squid_client_http_requests_total") - value(
            first, "squid_client_http_requests_total"
        )
        misses, hits = 7, 5
        paths = [f"/object-{uuid.uuid4()}" for _ in range(misses)]
        for path in paths:
            assert http_get(f"http://127.0.0.1:{origin.port}{path}", proxy=proxy)[0] == 200
        for path in paths[:hits]:
            assert http_get(f"http://127.0.0.1:{origin.port}{path}", proxy=proxy)[0] == 200
        third, types, body = scrape(base)
    finally:
        origin.close()
    sent = misses + hits
    assert (
        value(third, "squid_client_http_requests_total")
        - value(second, "squid_client_http_requests_total")
        == sent + own
    )
    assert (
        value(third, "squid_client_http_hits_total") - value(second, "squid_client_http_hits_total")
        == hits
    )
    assert (
        value(third, "squid_server_http_requests_total")
        - value(second, "squid_server_http_requests_total")
        == misses
    )
    assert value(third, "squid_client_http_errors_total") == value(
        second, "squid_client_http_errors_total"
    )
    assert value(third, "squid_client_http_out_bytes_total") > value(
        second, "squid_client_http_out_bytes_total"
    )
    assert (
        types["squid_client_http_requests"] == "counter"
    )  # the parser names a counter without _total
    for name in ("squid_up", "cephaloproxy_ready", "cephaloproxy_live"):
        assert value(third, name) == 1, name
    assert value(third, "squid_info_Maximum_number_of_file_descriptors") > 0
    assert value(third, "squid_info_Number_of_file_desc_currently_in_use") > 0
    assert value(third, "squid_info_UP_Time") > 0
    assert (
        value(third, "squid_service_time_seconds", category="http_requests_all", quantile="0.5")
        >= 0
    )
    assert value(third, "cephaloproxy_config_check_duration_seconds") > 0
    assert abs(value(third, "process_start_time_seconds") - time.time()) < 600
    build = [labels for (name, labels) in third if name == "cephaloproxy_build_info"]
    assert build and dict(build[0])["squid_version"].startswith("7.")
    assert value(third, "cephaloproxy_reloads_total", result="ok") == 0
    # The scrapes' manager requests stay out of the access log (the default config's `!manager`).
    time.sleep(1)
    assert "squid-internal-mgr" not in run.stdout
    assert body.endswith("\n")


def test_metrics_off_is_404(workspace: Workspace, launch: Launcher) -> None:
    _, base, _ = ready(workspace, launch, METRICS="off")
    status, body, _ = http_get(f"{base}/metrics")
    assert (status, body) == (404, "Not Found\n")


# What every config here ends with (logs to the entrypoint, paths in the workspace).
CONFIG_TAIL = """cache_log /dev/stderr
cache_store_log none
pid_filename {run}/squid.pid
coredump_dir {spool}
visible_hostname test
pinger_enable off
shutdown_lifetime 1 seconds
"""
MANAGER_DENIED_CONFIG = (
    """
http_port 127.0.0.1:{port}
acl localnet src 10.0.0.0/8
http_access allow localnet
http_access deny all
cache deny all
access_log stdio:/dev/stdout
"""
    + CONFIG_TAIL
)


def write_config(workspace: Workspace, template: str, **fields: str) -> None:
    """`template` (its {port}, {run}, {spool} and `fields`) as the custom config."""
    workspace.write_custom_config(
        template.format(
            port=workspace.squid_port,
            run=workspace.runtime_dir("run"),
            spool=workspace.runtime_dir("spool"),
            **fields,
        )
    )


def test_denied_manager_gives_entrypoint_figures_and_one_log_line(
    workspace: Workspace, launch: Launcher
) -> None:
    write_config(workspace, MANAGER_DENIED_CONFIG)
    run, base, _ = ready(workspace, launch)
    for _ in range(5):
        series, _, body = scrape(base)
        assert value(series, "squid_up") == 0
        assert value(series, "cephaloproxy_squid_manager_denied") == 1
        assert value(series, "cephaloproxy_ready") == 1
        assert (
            "squid_client_http_requests_total",
            (),
        ) not in series  # family kept, no made-up value
        assert "# TYPE squid_client_http_requests_total counter" in body
    time.sleep(0.5)
    lines = [line for line in run.output.splitlines() if "denies the cache manager" in line]
    assert len(lines) == 1, lines
    assert (
        "`http_access allow localhost manager`" in lines[0]
        and "`http_access deny manager`" in lines[0]
    )
    assert str(workspace.custom_config) in lines[0]


def stop_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def test_hung_manager_and_100_scrapes_never_delay_the_probes(
    workspace: Workspace, launch: Launcher
) -> None:
    run, base, _ = ready(workspace, launch)
    squid_pid = run.wait_ready()
    kids = [
        process.pid for process in process_tree(squid_pid)[1:]
    ]  # the worker (and its helpers): a hung manager
    stop_all(kids, signal.SIGSTOP)
    try:
        assert wait_until(lambda: all(process_state(pid) in ("T", None) for pid in kids), 10)
        with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
            started = time.monotonic()
            scrapes = [
                pool.submit(http_get, f"{base}/metrics", SCRAPE_DEADLINE + SLACK)
                for _ in range(100)
            ]
            time.sleep(0.2)  # the scrapes are parked on the hung manager now
            for path in ("/health", "/ready", "/health", "/ready"):
                status, took = timed_get(f"{base}{path}")
                assert took < PROBE_BOUND, f"{path} took {took:.2f} s during 100 hung scrapes"
                assert status in (200, 503)
            answers = [future.result() for future in scrapes]
            took = time.monotonic() - started
        assert took < SCRAPE_DEADLINE + SLACK
        for status, body, _ in answers:
            assert status == 200, body
            series, _ = parse_exposition(body)
            assert value(series, "squid_up") == 0
            assert value(series, "cephaloproxy_ready") == 0  # the stopped worker fails /ready too
    finally:
        stop_all(kids, signal.SIGCONT)
    # PID 1 acts on SIGTERM at once while a scrape waits on a hung manager.
    stop_all(kids, signal.SIGSTOP)
    pending = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pending.submit(http_get, f"{base}/metrics", SCRAPE_DEADLINE + SLACK)
        time.sleep(0.2)
        os.kill(run.pid, signal.SIGTERM)
        run.wait_for_output(r"Received signal SIGTERM, initiating graceful shutdown", PROBE_BOUND)
    finally:
        stop_all(kids, signal.SIGCONT)
        pending.shutdown(wait=True)


def test_scrape_before_squid_started(workspace: Workspace, launch: Launcher) -> None:
    from tests.entrypoint.testing import pausing_squid

    wrapper, marker = pausing_squid(workspace, "-k parse", pause=6.0)
    launch(workspace.env(CEPHALOPROXY_SQUID_BIN=str(wrapper)))
    assert wait_until(marker.exists, 60)
    base = f"http://127.0.0.1:{workspace.health_port}"
    assert wait_until(lambda: _answers(f"{base}/health"), 30)
    series, _, _ = scrape(base)
    assert value(series, "squid_up") == 0
    assert value(series, "cephaloproxy_ready") == 0
    _status, took = timed_get(f"{base}/health")
    assert took < PROBE_BOUND


def test_scrapes_during_reload_and_drain(workspace: Workspace, launch: Launcher) -> None:
    run, base, proxy = ready(workspace, launch, SHUTDOWN_TIMEOUT="20")
    stop = threading.Event()
    answers: list[tuple[int, str]] = []

    def hammer() -> None:
        while not stop.is_set():
            try:
                status, body, _ = http_get(f"{base}/metrics", timeout=SCRAPE_DEADLINE + SLACK)
            except OSError:
                return  # the health server is gone: the container stopped
            answers.append((status, body))

    scraper = threading.Thread(target=hammer, daemon=True)
    scraper.start()
    try:
        os.kill(run.pid, signal.SIGHUP)
        run.wait_for_output(r"Squid reconfigured", 60)
        for _ in range(5):
            assert timed_get(f"{base}/health")[1] < PROBE_BOUND
        assert wait_until(
            lambda: value(scrape(base)[0], "cephaloproxy_reloads_total", result="ok") == 1, 10
        )
        # A transfer that keeps the drain going; SIGTERM; scrape while it drains.
        origin = start_slow_origin()
        transfer = threading.Thread(
            target=lambda: _ignore_errors(
                lambda: http_get(f"http://127.0.0.1:{origin.port}/8", proxy=proxy, timeout=30)
            ),
            daemon=True,
        )
        transfer.start()
        time.sleep(1.0)
        os.kill(run.pid, signal.SIGTERM)
        run.wait_for_output(r"Draining \d+ client connections", 30)
        draining, _, _ = scrape(base)
        assert value(draining, "cephaloproxy_draining") == 1
        assert value(draining, "cephaloproxy_last_drain_connections") >= 1
        assert timed_get(f"{base}/health")[1] < PROBE_BOUND
    finally:
        stop.set()
        scraper.join(SCRAPE_DEADLINE + SLACK)
    assert run.wait_exit(40) == 0
    assert answers
    for status, body in answers:
        assert status == 200, body
        parse_exposition(body)
    origin.close()


def _answers(url: str) -> bool:
    try:
        return http_get(url, timeout=5)[0] in (200, 503)
    except OSError:
        return False


def _ignore_errors(call: Callable[[], object]) -> None:
    try:
        call()
    except OSError:
        pass


def test_scrape_is_one_exchange_on_a_raw_socket(workspace: Workspace, launch: Launcher) -> None:
    """HEAD gets the head only; the parked client's connection is closed after the answer."""
    _, _base, _ = ready(workspace, launch)
    with socket.create_connection(("127.0.0.1", workspace.health_port), 10) as conn:
        conn.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        conn.settimeout(SCRAPE_DEADLINE + SLACK)
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b""
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head


def health_server_pid(entrypoint_pid: int) -> int:
    for process in process_tree(entrypoint_pid)[1:]:
        try:
            if b"entrypoint.healthcheck_cli" in open(f"/proc/{process.pid}/cmdline", "rb").read():
                return process.pid
        except OSError:
            continue
    raise AssertionError("no health server under the entrypoint")


def test_pid1_counts_skipped_reloads_and_health_server_restarts(
    workspace: Workspace, launch: Launcher
) -> None:
    run, base, _ = ready(workspace, launch)
    workspace.write_custom_config(
        "this_is_no_directive at all\n"
    )  # a mounted config wins: the reload refuses it
    os.kill(run.pid, signal.SIGHUP)
    run.wait_for_output(r"Reload skipped", 60, stream="stderr")
    os.kill(health_server_pid(run.pid), signal.SIGKILL)
    run.wait_for_output(r"Health server restarted \(restart 1\)", 60)

    def counted() -> bool:
        try:
            series = scrape(base)[0]
        except (OSError, AssertionError):
            return False
        return (
            value(series, "cephaloproxy_reloads_total", result="skipped") == 1
            and value(series, "cephaloproxy_reloads_total", result="ok") == 0
            and value(series, "cephaloproxy_health_server_restarts_total") == 1
        )

    assert wait_until(counted, 10)
    series = scrape(base)[0]
    assert value(series, "cephaloproxy_log_lines_dropped_total", stream="stdout") == 0
    assert value(series, "squid_up") == 1  # Squid kept its config and its manager


MANAGER_PASSWORD = "Mgr-Pa55-7f3k"
PASSWORD_CONFIG = (
    """
http_port 127.0.0.1:{port}
{passwords}
http_access allow localhost manager
http_access deny manager
http_access allow localhost
http_access deny all
cache deny all
access_log stdio:/dev/stdout !manager
"""
    + CONFIG_TAIL
)


def test_a_manager_password_is_named_as_the_cause_and_the_advice_works(
    workspace: Workspace, launch: Launcher
) -> None:
    """`cachemgr_passwd SECRET all`: Squid answers the scrape 401. The log blamed http_access
    ("denies the cache manager to localhost ... add http_access allow localhost manager"),
    which the config already had. It names cachemgr_passwd, its advice works, and the
    password is in no log line."""

    def start(passwords: str) -> tuple[EntrypointRun, Series]:
        write_config(workspace, PASSWORD_CONFIG, passwords=passwords)
        run, base, _ = ready(workspace, launch)
        return run, scrape(base)[0]

    run, series = start(f"cachemgr_passwd {MANAGER_PASSWORD} all")
    assert value(series, "squid_up") == 0
    assert value(series, "cephaloproxy_squid_manager_denied") == 1
    run.wait_for_output(r"Metrics: the cache manager refused", 10, stream="stderr")
    lines = [line for line in run.output.splitlines() if "Metrics:" in line]
    assert len(lines) == 1 and "(HTTP 401)" in lines[0], lines
    assert "cachemgr_passwd" in lines[0] and "http_access allow" not in lines[0], lines[0]
    assert "`cachemgr_passwd none counters info service_times`" in lines[0]
    run.cleanup()
    assert MANAGER_PASSWORD.lower() not in run.output.lower()

    run, series = start(
        f"cachemgr_passwd none counters info service_times\ncachemgr_passwd {MANAGER_PASSWORD} all"
    )
    assert value(series, "squid_up") == 1, "the advice did not let the scrape in"
    assert value(series, "cephaloproxy_squid_manager_denied") == 0


@pytest.mark.parametrize(
    ("option", "log_line"),
    [
        ("intercept", "NAT lookup failed"),
        ("require-proxy-header", "manager ACL is used in context"),
    ],
)
def test_a_first_port_that_refuses_plain_requests_is_not_scraped(
    workspace: Workspace, launch: Launcher, option: str, log_line: str
) -> None:
    """First http_port `intercept` (or `require-proxy-header`), a plain one after it: the scrape
    asked the first port, which refuses plain requests, so squid_up stayed 0 and Squid logged
    two ERROR lines (NAT lookup failed) per report, six per scrape (a WARNING per report). The
    manager is read on the plain port."""
    plain = free_port()
    write_config(
        workspace,
        PASSWORD_CONFIG.replace("http_port 127.0.0.1:{port}", f"http_port {{port}} {option}"),
        passwords=f"http_port 127.0.0.1:{plain}\nproxy_protocol_access allow localhost",
    )
    run, base, _ = ready(workspace, launch)
    for _ in range(3):
        series, _, _ = scrape(base)
        assert value(series, "squid_up") == 1
    time.sleep(0.5)
    logged = [line for line in run.output.splitlines() if log_line in line]
    assert logged == [], logged[:3]


def test_an_https_only_config_is_not_scraped_in_plain_text(
    workspace: Workspace, launch: Launcher
) -> None:
    """Only an https_port: each scrape sent plain HTTP to the TLS port; Squid logged `ERROR: Cannot
    accept a TLS connection` and a WARNING for every one (two lines per scrape, for ever) and the
    log said "Connection reset by peer". Now the manager is not asked; one line says why and what to add."""
    certs = workspace.make_dir(workspace.etc / "certs")
    ca, ca_key = make_ca(certs, "Metrics CA")
    cert, key = make_server_cert(certs, ca, ca_key, "proxy.test")
    workspace.share_tree(certs)
    https_only = PASSWORD_CONFIG.replace(
        "http_port 127.0.0.1:{port}", f"https_port 127.0.0.1:{{port}} tls-cert={cert} tls-key={key}"
    )
    write_config(workspace, https_only, passwords="")
    run, base, _ = ready(workspace, launch)
    for _ in range(3):
        series, _, _ = scrape(base)
        assert value(series, "squid_up") == 0
        assert value(series, "cephaloproxy_ready") == 1
    time.sleep(0.5)
    output = run.output
    assert "Cannot accept a TLS connection" not in output
    lines = [line for line in output.splitlines() if "Metrics:" in line]
    assert (
        len(lines) == 1 and "no plain http_port" in lines[0] and "`http_port 127.0.0.1:" in lines[0]
    ), lines


def test_parked_scrapes_leave_descriptors_for_the_probes(
    workspace: Workspace, launch: Launcher
) -> None:
    """Parked scrapes were not counted against the health server's connection limit (nor its
    FD_RESERVE for /proc reads): under RLIMIT_NOFILE 120, 140 scrapes on a hung manager plus 80
    idle clients made 21 of 28 /health probes end without an answer (0 of 37 without the
    scrapes). Parked scrapes now count, and take at most half the limit."""
    run = launch(workspace.env(), argv=entrypoint_with_rlimit(workspace, "RLIMIT_NOFILE", 120))
    squid_pid = run.wait_ready()
    base = f"http://127.0.0.1:{workspace.health_port}"
    kids = [process.pid for process in process_tree(squid_pid)[1:]]
    idle: list[socket.socket] = []
    scrapers: list[socket.socket] = []
    stop_all(kids, signal.SIGSTOP)  # scrapes stay parked (the worker has /health's 10 s grace)
    try:
        for _ in range(140):
            with contextlib.suppress(OSError):
                scraper = socket.create_connection(("127.0.0.1", workspace.health_port), 2)
                scraper.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                scrapers.append(scraper)
        for _ in range(80):
            with contextlib.suppress(OSError):
                client = socket.create_connection(("127.0.0.1", workspace.health_port), 2)
                client.sendall(b"GET /")  # a head that never completes
                idle.append(client)
        failures = []
        for _ in range(8):
            try:
                status, took = timed_get(f"{base}/health")
            except OSError as error:
                status, took = 0, 0.0
                failures.append(str(error))
            if status != 200 or took >= PROBE_BOUND:
                failures.append(f"{status} after {took:.2f} s")
            time.sleep(0.2)
        assert failures == [], failures
    finally:
        stop_all(kids, signal.SIGCONT)
        for held in (*idle, *scrapers):
            held.close()
