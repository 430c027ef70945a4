"""Entrypoint log-line parsing and in-order matching."""

from __future__ import annotations

import datetime
import re

import pytest

from tests.support import logs

SAMPLE = """\
2026-11-28 20:00:01 [INFO] CephaloProxy entrypoint starting (UID: 1000660000, GID: 0)
2026-11-28 20:00:01 [WARNING] LOG_LEVEL='LOUD' is not one of DEBUG, INFO, WARNING, ERROR; using INFO
1764360001.123    0 10.88.0.1 TCP_MISS/200 123 GET http://10.88.0.1:8000/ - HIER_DIRECT/10.88.0.1 text/plain
2026-11-28 20:00:02 [INFO] Checking Squid config /etc/squid/squid.conf.default
2026/11/28 20:00:02| Squid's own cache.log line, not ours
2026-11-28 20:00:02 [INFO] Starting Squid proxy...
2026-11-28 20:00:03 [INFO] Squid started with PID 17
2026-11-28 20:00:03 [INFO] Container ready, entering monitoring loop
2026-13-45 99:00:00 [INFO] not a real date
2026-11-28 20:00:09 [ERROR] Squid process died unexpectedly (signal SIGKILL)
"""


def test_parse_keeps_only_entrypoint_lines_in_order() -> None:
    lines = logs.parse_log_lines(SAMPLE)
    assert [line.level for line in lines] == [
        "INFO",
        "WARNING",
        "INFO",
        "INFO",
        "INFO",
        "INFO",
        "ERROR",
    ]
    assert lines[0].timestamp == datetime.datetime(2026, 11, 28, 20, 0, 1)
    assert lines[0].message == "CephaloProxy entrypoint starting (UID: 1000660000, GID: 0)"
    assert [line.index for line in lines] == list(range(7))


def test_in_order_accepts_substrings_and_regexes() -> None:
    matched = logs.assert_in_order(
        SAMPLE,
        [
            "entrypoint starting",
            re.compile(r"Checking Squid config \S+"),
            "Squid started with PID",
            "Container ready",
        ],
    )
    assert [m.index for m in matched] == [0, 2, 4, 5]


def test_out_of_order_is_reported_with_what_was_seen() -> None:
    with pytest.raises(AssertionError) as raised:
        logs.assert_in_order(SAMPLE, ["Container ready", "Starting Squid proxy..."])
    message = str(raised.value)
    assert "'Starting Squid proxy...' not found after 'Container ready" in message
    assert "INFO: Squid started with PID 17" in message


def test_find_in_order_reports_first_missing() -> None:
    check = logs.find_in_order(
        logs.parse_log_lines(SAMPLE), ["starting", "Shutdown complete", "Container ready"]
    )
    assert not check.ok
    assert check.missing == "Shutdown complete"
    assert len(check.matched) == 1


def test_levels_and_pid_helpers() -> None:
    assert logs.messages_at(SAMPLE, ["error"]) == [
        "Squid process died unexpectedly (signal SIGKILL)"
    ]
    assert logs.squid_pid(SAMPLE) == 17
    assert logs.squid_pid("no pid here") is None
