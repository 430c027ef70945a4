"""The Grafana dashboard (deploy/grafana) parses and queries only metric families /metrics has."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from entrypoint.exposition import render
from entrypoint.metrics import Collector, health_families
from entrypoint.squid_serving import SquidWatch

DASHBOARD = Path(__file__).absolute().parent / "grafana" / "cephaloproxy-dashboard.json"
# Every name the exposition could hold starts so; other identifiers in a query are PromQL's.
METRIC = re.compile(r"\b(?:squid|cephaloproxy|process)_[A-Za-z0-9_]*")


def exposition_families(tmp_path: Path) -> set[str]:
    """Family names of a real scrape's exposition (no Squid: every family is still declared)."""
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    families = Collector(
        "127.0.0.1", port, tmp_path / "state.json", tmp_path / "squid.conf"
    ).collect()
    families += health_families([], SquidWatch(tmp_path / "squid.pid", "squid", [port]))
    return set(re.findall(r"^# TYPE (\S+) ", render(families), re.MULTILINE))


def queries(node: Any) -> Iterator[str]:
    """Every PromQL string in the dashboard: panel targets and templating queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query") and isinstance(value, str):
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def test_dashboard_parses_and_has_the_main_figures() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    for wanted in (
        "Requests/s",
        "Hit ratio",
        "Errors/s",
        "Service time percentiles (5 min window)",
        "File descriptors",
        "Reloads",
        "Restarts and kid exits",
    ):
        assert wanted in titles
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel[
            "title"
        ]


def test_dashboard_queries_only_families_the_exposition_has(tmp_path: Path) -> None:
    families = exposition_families(tmp_path)
    assert (
        "squid_client_http_requests_total" in families and "cephaloproxy_reloads_total" in families
    )
    used = {
        name
        for query in queries(json.loads(DASHBOARD.read_text()))
        for name in METRIC.findall(query)
    }
    assert used, "no metric found in the dashboard's queries"
    assert used - families == set(), (
        f"the dashboard queries metrics /metrics does not have: {sorted(used - families)}"
    )


def test_the_check_sees_an_unknown_name(tmp_path: Path) -> None:
    assert "squid_client_http_kbytes_out_kbytes_total" not in exposition_families(tmp_path)
    assert METRIC.findall('rate(squid_client_http_kbytes_out_kbytes_total{pod=~"$pod"}[5m])') == [
        "squid_client_http_kbytes_out_kbytes_total"
    ]
