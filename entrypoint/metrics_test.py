"""The metrics pieces on their own: report parsers, exposition writer, state file and manager answers, under hostile input."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrypoint.exposition import Family, counter, gauge, render
from entrypoint.metrics import Collector, entrypoint_families, squid_families
from entrypoint.metrics_state import STATE_FILE_NAME, EntrypointMetrics, read_state
from entrypoint.settings import load_settings
from entrypoint.squid_manager import ManagerError, _body, fetch
from entrypoint.squid_reports import parse_counters, parse_info, parse_service_times
from tests.entrypoint.metrics_testing import Series, parse_exposition

# Real Squid 7.7 output (captured from /opt/squid77 in this environment), trimmed.
COUNTERS = """sample_time = 1796614651.251268 (Mon, 07 Dec 2026 03:37:31 GMT)
client_http.requests = 12
client_http.hits = 5
client_http.errors = 1
client_http.kbytes_in = 3
client_http.kbytes_out = 40
server.all.requests = 7
server.http.requests = 7
cpu_time = 0.044099
"""
INFO = """Squid Object Cache: Version 7.7
Start Time:\tMon, 07 Dec 2026 03:37:30 GMT
Connection information for squid:
\tNumber of clients accessing cache:\t1
\tSelect loop called: 6 times, 63.522 ms avg
Cache information for squid:
\tHits as % of all requests:\t5min: 41.7%, 60min: 40.0%
\tStorage Mem size:\t216 KB
Resource usage for squid:
\tUP Time:\t0.381 seconds
\tCPU Usage, 5 minute avg:\t0.00%
\tMaximum Resident Size: 97104 KB
File descriptor usage for squid:
\tMaximum number of file descriptors:   20000
\tNumber of file desc currently in use:    9
Internal Data Structures:
\t    52 StoreEntries
\t     0 on-disk objects
"""
SERVICE_TIMES = """Service Time Percentiles            5 min    60 min:
\tHTTP Requests (All):   5%   0.00100  0.00000
\tHTTP Requests (All):  50%   0.01235  0.04460
\tCache Misses:          95%   0.50000  0.00000
\tNot-Modified Replies: 50%   0.00000  0.00000
"""


def parsed(text: str) -> Series:
    return parse_exposition(text)[0]


def test_parsers_read_squid_77_reports() -> None:
    assert parse_counters(COUNTERS)["client_http.requests"] == 12
    assert parse_counters(COUNTERS)["sample_time"] == 1796614651.251268
    info = parse_info(INFO)
    assert info["Number_of_clients_accessing_cache"] == 1
    assert info["Hits_as_pct_of_all_requests_5min"] == 41.7
    assert info["Hits_as_pct_of_all_requests_60min"] == 40.0
    assert info["Select_loop_called"] == 6
    assert info["Maximum_Resident_Size"] == 97104
    assert info["StoreEntries"] == 52 and info["on_disk_objects"] == 0
    assert info["UP_Time"] == 0.381
    times = parse_service_times(SERVICE_TIMES)
    assert times == {
        ("HTTP_Requests_All", 5): 0.001,
        ("HTTP_Requests_All", 50): 0.01235,
        ("Cache_Misses", 95): 0.5,
        ("Not_Modified_Replies", 50): 0.0,
    }


def test_squid_families_units_and_names() -> None:
    series = parsed(
        render(squid_families({"counters": COUNTERS, "info": INFO, "service_times": SERVICE_TIMES}))
    )
    assert series[("squid_client_http_requests_total", ())] == 12
    assert series[("squid_client_http_out_bytes_total", ())] == 40 * 1024
    assert series[("squid_info_Maximum_Resident_Size_bytes", ())] == 97104 * 1024
    assert series[("squid_info_Hits_as_pct_of_all_requests_5min", ())] == 41.7
    assert (
        series[
            ("squid_service_time_seconds", (("category", "http_requests_all"), ("quantile", "0.5")))
        ]
        == 0.01235
    )
    assert series[("squid_cpu_seconds_total", ())] == 0.044099


def test_per_kid_sections_are_not_added_to_the_total() -> None:
    text = "client_http.requests = 10\nby kid1 {\nclient_http.requests = 4\n} by kid1\n"
    assert parse_counters(text) == {"client_http.requests": 10}


report_text = st.one_of(
    st.text(max_size=2000),
    st.lists(
        st.sampled_from(
            [
                *COUNTERS.splitlines(),
                *INFO.splitlines(),
                *SERVICE_TIMES.splitlines(),
                "by kid1 {",
                "} by kid1",
                "client_http.requests = 1e999",
                "\tUP Time:\tnan seconds",
                "client_http.hits = -0",
                "\tX: 999%   1 2",
                "\t 99999999999999999999 Things",
                "a.b = " + "9" * 5000,
            ]
        ),
        max_size=60,
    ).map("\n".join),
    st.binary(max_size=2000).map(lambda raw: raw.decode("latin-1")),
)


@settings(max_examples=300, deadline=None)
@given(counters=report_text, info=report_text, service_times=report_text)
def test_garbage_reports_never_crash_and_never_give_an_invalid_exposition(
    counters: str, info: str, service_times: str
) -> None:
    for values in (parse_counters(counters), parse_info(info)):
        assert all(math.isfinite(value) for value in values.values())
    families = squid_families({"counters": counters, "info": info, "service_times": service_times})
    parsed(render(families + entrypoint_families({})))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(max_size=20), st.floats(allow_nan=True, allow_infinity=True)), max_size=8
    )
)
def test_exposition_escapes_any_label_value(samples: list[tuple[str, float]]) -> None:
    family = gauge("cephaloproxy_test", "help with \\ backslash\nand newline")
    for text, number in samples:
        family.add(number, value=text)
    exposition = render(
        [family, counter("cephaloproxy_test", "a second family of that name is dropped", 1)]
    )
    assert len(exposition.splitlines()) == 2 + len(
        family.samples
    )  # no character another reader splits on
    exposition.encode("utf-8")
    series = parsed(exposition)
    assert len(series) <= len({text for text, _ in samples})


def test_invalid_names_are_refused_by_the_writer() -> None:
    with pytest.raises(ValueError):
        Family("bad name", "gauge", "x")
    with pytest.raises(ValueError):
        gauge("ok", "x").add(1, __reserved="x")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_any_manager_answer_is_a_report_or_a_manager_error(raw: bytes) -> None:
    try:
        body, server = _body(raw, "counters")
    except ManagerError:
        return
    assert isinstance(body, str) and isinstance(server, str)


def test_manager_answers_by_status() -> None:
    assert _body(b"HTTP/1.1 200 OK\r\nServer: squid/7.7\r\n\r\nx = 1\n", "counters") == (
        "x = 1\n",
        "squid/7.7",
    )
    with pytest.raises(ManagerError) as denied:
        _body(b"HTTP/1.1 403 Forbidden\r\n\r\n<html>", "counters")
    assert denied.value.denied
    with pytest.raises(ManagerError) as other:
        _body(b"HTTP/1.1 500 Oops\r\n\r\n", "info")
    assert not other.value.denied


def test_a_manager_that_never_answers_costs_the_deadline_only() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepted by the kernel, never answered: a stopped Squid kid
    try:
        started = time.monotonic()
        with pytest.raises(ManagerError, match="in time"):
            fetch("127.0.0.1", listener.getsockname()[1], "counters", started + 0.5)
        assert time.monotonic() - started < 3.0
    finally:
        listener.close()


def test_a_manager_that_floods_is_cut() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def flood() -> None:
        conn, _ = listener.accept()
        try:
            conn.recv(4096)  # the request: closing with it unread would reset the connection
            conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (2 << 20))
        except OSError:
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        with pytest.raises(ManagerError, match="exceeds"):
            fetch("127.0.0.1", listener.getsockname()[1], "counters", time.monotonic() + 10)
    finally:
        listener.close()
        thread.join(10)


def test_collector_without_squid_gives_a_valid_exposition(tmp_path: Path) -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nobody listens: Squid not started
    collector = Collector("127.0.0.1", port, tmp_path / STATE_FILE_NAME, tmp_path / "squid.conf")
    series = parsed(render(collector.collect()))
    assert series[("squid_up", ())] == 0
    assert ("squid_client_http_requests_total", ()) not in series


def test_state_round_trip(tmp_path: Path) -> None:
    metrics = EntrypointMetrics(tmp_path / STATE_FILE_NAME)
    metrics.sources = {"health_server_restarts": lambda: 2}
    metrics.reload_done("ok")
    metrics.reload_done("skipped")
    metrics.drain_started(3)
    metrics.drain_ended(1.5)
    state = read_state(tmp_path / STATE_FILE_NAME)
    assert (
        state["reloads_ok"] == 1 and state["reloads_skipped"] == 1 and state["reloads_failed"] == 0
    )
    assert state["last_drain_connections"] == 3 and state["last_drain_duration_seconds"] == 1.5
    assert state["draining"] == 0 and state["health_server_restarts"] == 2
    series = parsed(render(entrypoint_families(state)))
    assert series[("cephaloproxy_reloads_total", (("result", "skipped"),))] == 1
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.dictionaries(
            st.sampled_from(["reloads_ok", "draining", "process_start_time_seconds", "other"]),
            json_values,
        ),
        json_values,
        st.just(10**400),
    )
)
def test_a_tampered_state_file_gives_known_finite_numbers_only(
    tmp_path_factory: pytest.TempPathFactory, content: object
) -> None:
    path = tmp_path_factory.mktemp("state") / STATE_FILE_NAME
    path.write_text(json.dumps(content))
    state = read_state(path)
    assert all(isinstance(value, float) and math.isfinite(value) for value in state.values())
    parsed(render(entrypoint_families(state)))


def test_state_file_that_is_not_a_regular_file_is_ignored(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # a planted FIFO would block a blocking open forever
    assert read_state(fifo) == {}
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    assert read_state(link) == {}
    big = tmp_path / "big"
    big.write_text(" " * 70000 + "{}")
    assert read_state(big) == {}


@pytest.mark.parametrize(
    ("raw", "enabled", "warned"),
    [
        (None, True, False),
        ("", True, False),
        ("off", False, False),
        (" OFF ", False, False),
        ("0", False, False),
        ("on", True, False),
        ("yes", True, False),
        ("nope", True, True),
        ("off\x1b[2J", True, True),
    ],
)
def test_metrics_setting(raw: str | None, enabled: bool, warned: bool) -> None:
    settings_, warnings = load_settings({} if raw is None else {"METRICS": raw})
    assert settings_.metrics is enabled
    assert bool(warnings) is warned
    assert all("\x1b" not in warning and "METRICS=" in warning for warning in warnings)


class GarbageManager:
    """A stand-in cache manager on loopback answering every request with `answer` (then closing)."""

    def __init__(self) -> None:
        self.answer = b""
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(self.answer)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def garbage_manager() -> Iterator[GarbageManager]:
    manager = GarbageManager()
    yield manager
    manager.listener.close()


@settings(max_examples=60, deadline=None)
@given(
    answer=st.one_of(
        st.binary(max_size=3000),
        report_text.map(
            lambda body: (
                b"HTTP/1.1 200 OK\r\nServer: squid/\x1b[31m7.7\r\n\r\n"
                + body.encode("utf-8", "surrogatepass")
            )
        ),
        st.sampled_from(
            [
                b"HTTP/1.1 403 Forbidden\r\n\r\n",
                b"HTTP/1.1 200 OK\r\n\r\n",
                b"",
                b"HTTP/1.1 999 \r\n\r\n",
            ]
        ),
    )
)
def test_a_scrape_of_a_garbage_manager_is_a_valid_exposition(
    garbage_manager: GarbageManager, tmp_path_factory: pytest.TempPathFactory, answer: bytes
) -> None:
    garbage_manager.answer = answer
    directory = tmp_path_factory.mktemp("scrape")
    collector = Collector(
        "127.0.0.1", garbage_manager.port, directory / STATE_FILE_NAME, directory / "squid.conf"
    )
    series = parsed(render(collector.collect()))
    assert series[("squid_up", ())] in (0, 1)
    (build,) = [labels for name, labels in series if name == "cephaloproxy_build_info"]
    assert all(re.fullmatch(r"[A-Za-z0-9.+_-]{1,64}", value) for _, value in build)
