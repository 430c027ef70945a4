"""What `/metrics` shows: Squid's figures (cache manager reports), PID 1's (its state file) and the health server's own.

Names follow squid-exporter where it has the same figure (dashboards keep working) and Prometheus
conventions otherwise (docs/operating.md "Metrics" lists every family and where they differ).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from entrypoint.exposition import Family, counter, gauge
from entrypoint.log_text import escape_controls
from entrypoint.metrics_state import read_state
from entrypoint.squid_manager import REPORTS, ManagerError, fetch
from entrypoint.squid_reports import parse_counters, parse_info, parse_service_times
from entrypoint.squid_serving import SquidWatch

MANAGER_TIMEOUT = (
    2.0  # seconds for all three reports together: a scrape never waits longer on Squid
)
KIB = 1024.0
NO_PLAIN_PORT = (
    "the Squid config has no plain http_port (only https_port or intercept/tproxy ports, where"
    " a plain request fails and Squid logs an error for each), so its cache manager is not read;"
    " add one for the scrape, e.g. `http_port 127.0.0.1:3129`"
)

log = logging.getLogger("cephaloproxy.health")

# counters report key -> (family, help, scale); squid-exporter's names, bytes in bytes (it has kbytes).
SQUID_COUNTERS: dict[str, tuple[str, str, float]] = {
    "client_http.requests": (
        "squid_client_http_requests_total",
        "Client HTTP requests received",
        1,
    ),
    "client_http.hits": (
        "squid_client_http_hits_total",
        "Client HTTP requests answered from the cache",
        1,
    ),
    "client_http.errors": (
        "squid_client_http_errors_total",
        "Client HTTP requests answered with an error",
        1,
    ),
    "client_http.kbytes_in": (
        "squid_client_http_in_bytes_total",
        "Bytes received from clients (Squid counts KiB)",
        KIB,
    ),
    "client_http.kbytes_out": (
        "squid_client_http_out_bytes_total",
        "Bytes sent to clients (Squid counts KiB)",
        KIB,
    ),
    "client_http.hit_kbytes_out": (
        "squid_client_http_hit_out_bytes_total",
        "Bytes sent to clients from the cache (KiB)",
        KIB,
    ),
    **{
        f"server.{kind}.{what}": (
            f"squid_server_{kind}_{what}_total",
            f"Requests to origin servers ({kind}): {what}",
            1,
        )
        for kind in ("all", "http", "ftp", "other")
        for what in ("requests", "errors")
    },
    **{
        f"server.{kind}.kbytes_{way}": (
            f"squid_server_{kind}_{way}_bytes_total",
            f"Bytes {way} from/to origin servers ({kind}, KiB)",
            KIB,
        )
        for kind in ("all", "http", "ftp", "other")
        for way in ("in", "out")
    },
    "swap.ins": ("squid_swap_ins_total", "Objects read from the disk cache", 1),
    "swap.outs": ("squid_swap_outs_total", "Objects written to the disk cache", 1),
    "swap.files_cleaned": ("squid_swap_files_cleaned_total", "Orphan disk cache files removed", 1),
    "aborted_requests": (
        "squid_aborted_requests_total",
        "Client requests aborted before completion",
        1,
    ),
    "page_faults": ("squid_page_faults_total", "Page faults with physical I/O", 1),
    "cpu_time": ("squid_cpu_seconds_total", "CPU time Squid used (user and system)", 1),
}

# info report key -> (family, help, scale); squid-exporter's squid_info_* names, KB figures in bytes.
_INFO_COUNTS = (
    "Number_of_clients_accessing_cache",
    "Maximum_number_of_file_descriptors",
    "Number_of_file_desc_currently_in_use",
    "Largest_file_desc_currently_in_use",
    "Available_number_of_file_descriptors",
    "Reserved_number_of_file_descriptors",
    "Files_queued_for_open",
    "Store_Disk_files_open",
    "StoreEntries",
    "StoreEntries_with_MemObjects",
    "Hot_Object_Cache_Items",
    "on_disk_objects",
    "Request_failure_ratio",
)
_INFO_PERCENT = (
    "CPU_Usage",
    "CPU_Usage_5_minute_avg",
    "CPU_Usage_60_minute_avg",
    *(
        f"{ratio}_{window}"
        for ratio in (
            "Hits_as_pct_of_all_requests",
            "Hits_as_pct_of_bytes_sent",
            "Memory_hits_as_pct_of_hit_requests",
            "Disk_hits_as_pct_of_hit_requests",
        )
        for window in ("5min", "60min")
    ),
)
SQUID_INFO: dict[str, tuple[str, str, float]] = {
    **{key: (f"squid_info_{key}", key.replace("_", " "), 1) for key in _INFO_COUNTS},
    **{
        key: (f"squid_info_{key}", key.replace("_", " ").replace("pct", "%") + " (percent)", 1)
        for key in _INFO_PERCENT
    },
    "UP_Time": ("squid_info_UP_Time", "Seconds since Squid started", 1),
    "CPU_Time": ("squid_info_CPU_Time", "CPU seconds Squid used", 1),
    **{
        key: (
            f"squid_info_{key}_bytes",
            key.replace("_", " ") + " in bytes (Squid reports KB)",
            KIB,
        )
        for key in (
            "Maximum_Resident_Size",
            "Storage_Swap_size",
            "Storage_Mem_size",
            "Mean_Object_Size",
            "Total_accounted",
        )
    },
}


def _version_label(text: str) -> str:
    """A version for a label: letters, digits and `.+-_` only, at most 64 characters."""
    kept = re.sub(r"[^A-Za-z0-9.+_-]", "", text)[:64]
    return kept or "unknown"


class Collector:
    """Gathers Squid's reports and PID 1's figures; runs on the metrics worker thread (it blocks, bounded by MANAGER_TIMEOUT)."""

    def __init__(
        self, proxy_host: str, proxy_port: int | None, state_file: Path | None, config: Path
    ) -> None:
        """`proxy_port` None: the config has no plain http_port to ask the manager on."""
        self.proxy_host = proxy_host
        self.proxy_port = proxy_port
        self.state_file = state_file
        self.config = config
        self.squid_version = "unknown"  # from the manager's `Server: squid/7.7`, kept once seen
        self.image_version = _version_label(os.environ.get("CEPHALOPROXY_VERSION", ""))
        self.problem: str | None = (
            None  # the last failure logged (logged again only when it changes)
        )

    def collect(self) -> list[Family]:
        started = time.monotonic()
        reports, problem, denied, password = self._reports(started + MANAGER_TIMEOUT)
        self._log_change(problem, denied, password)
        families = squid_families(reports)
        families += [
            gauge(
                "squid_up",
                "Whether Squid's cache manager answered the last scrape (1) or not (0)",
                float(problem is None),
            ),
            gauge(
                "cephaloproxy_squid_manager_denied",
                "Whether Squid's http_access denied the cache manager to the scrape",
                float(denied),
            ),
            gauge(
                "cephaloproxy_scrape_duration_seconds",
                "Seconds the last scrape spent reading Squid's cache manager",
                time.monotonic() - started,
            ),
        ]
        families += entrypoint_families(read_state(self.state_file) if self.state_file else {})
        families.append(
            gauge(
                "cephaloproxy_build_info",
                "Versions of Squid, Python and the image (value 1)",
                1.0,
                squid_version=self.squid_version,
                python_version=".".join(map(str, sys.version_info[:3])),
                image_version=self.image_version,
            )
        )
        return families

    def _reports(self, deadline: float) -> tuple[dict[str, str], str | None, bool, bool]:
        reports: dict[str, str] = {}
        if self.proxy_port is None:
            return reports, NO_PLAIN_PORT, False, False
        for report in REPORTS:
            try:
                body, server = fetch(self.proxy_host, self.proxy_port, report, deadline)
            except ManagerError as error:
                return {}, str(error), error.denied, error.password
            reports[report] = body
            if server.startswith("squid/"):
                self.squid_version = _version_label(server[len("squid/") :])
        return reports, None, False, False

    def _log_change(self, problem: str | None, denied: bool, password: bool = False) -> None:
        if problem == self.problem:
            return
        self.problem = problem
        if problem is None:
            log.info("Squid's cache manager answers the metrics scrape again")
        elif password:  # http_access let it in; a cachemgr_passwd line wants a password
            log.error(
                "Metrics: %s: the Squid config %s asks a cache manager password (cachemgr_passwd),"
                " so /metrics has no Squid figures (squid_up 0). Let the scrape's three read-only"
                " reports in without one: put `cachemgr_passwd none counters info service_times`"
                " before the other cachemgr_passwd lines",
                escape_controls(problem),
                self.config,
            )
        elif denied:
            log.error(
                "Metrics: %s: the Squid config %s denies the cache manager to localhost, so /metrics has no Squid figures"
                " (squid_up 0). Add these two lines before its first http_access line: "
                "`http_access allow localhost manager` and `http_access deny manager`",
                escape_controls(problem),
                self.config,
            )
        else:
            log.warning(
                "Metrics: %s; /metrics has no Squid figures until it answers (squid_up 0)",
                escape_controls(problem),
            )


def squid_families(reports: dict[str, str]) -> list[Family]:
    """Squid's families from the report bodies; a family with no value (report missing or garbled) keeps its HELP and TYPE."""
    counters = parse_counters(reports.get("counters", ""))
    info = parse_info(reports.get("info", ""))
    times = parse_service_times(reports.get("service_times", ""))
    families = [_from_table(counters, key, spec, counter) for key, spec in SQUID_COUNTERS.items()]
    families += [_from_table(info, key, spec, gauge) for key, spec in SQUID_INFO.items()]
    service = gauge(
        "squid_service_time_seconds",
        "Service time percentiles over the last 5 minutes, by kind of request",
    )
    for (category, percent), seconds in times.items():
        service.add(seconds, category=category.lower(), quantile=f"{percent / 100:g}")
    families.append(service)
    return families


def _from_table(
    values: dict[str, float], key: str, spec: tuple[str, str, float], make: Callable[..., Family]
) -> Family:
    name, help_text, scale = spec
    value = values.get(key)
    return make(name, help_text, None if value is None else value * scale)


def entrypoint_families(state: dict[str, float]) -> list[Family]:
    """PID 1's families from its published state (empty families when it has published nothing yet)."""
    reloads = counter(
        "cephaloproxy_reloads_total",
        "Config reloads by result: ok, skipped (config refused), failed (unexpected error)",
    )
    dropped = counter(
        "cephaloproxy_log_lines_dropped_total",
        "Log lines PID 1 dropped because the reader of its stdout/stderr stalled",
    )
    for result in ("ok", "skipped", "failed"):
        if f"reloads_{result}" in state:
            reloads.add(state[f"reloads_{result}"], result=result)
    for stream in ("stdout", "stderr"):
        if f"log_lines_dropped_{stream}" in state:
            dropped.add(state[f"log_lines_dropped_{stream}"], stream=stream)
    return [
        gauge(
            "process_start_time_seconds",
            "Start time of the entrypoint (PID 1) since the Unix epoch in seconds",
            state.get("process_start_time_seconds"),
        ),
        reloads,
        counter(
            "cephaloproxy_health_server_restarts_total",
            "Restarts of the health server after it died",
            state.get("health_server_restarts"),
        ),
        dropped,
        gauge(
            "cephaloproxy_draining",
            "Whether Squid is draining client connections for a stop (1) or not (0)",
            state.get("draining"),
        ),
        gauge(
            "cephaloproxy_last_drain_duration_seconds",
            "Seconds the last drain took",
            state.get("last_drain_duration_seconds"),
        ),
        gauge(
            "cephaloproxy_last_drain_connections",
            "Client connections open when the last drain began",
            state.get("last_drain_connections"),
        ),
        gauge(
            "cephaloproxy_config_check_duration_seconds",
            "Seconds the last `squid -k parse` of the config took",
            state.get("config_check_duration_seconds"),
        ),
    ]


def health_families(readiness_failures: list[str], watch: SquidWatch) -> list[Family]:
    """The health server's own view (the same checks as /ready and /health); computed on its loop, like a probe.

    The readiness check (before) and the liveness check each look at Squid once; the kid count is read from that look.
    """
    live = watch.liveness_problem() is None
    seen = watch.last
    return [
        gauge(
            "cephaloproxy_ready",
            "Whether /ready passes (1) or not (0)",
            float(not readiness_failures),
        ),
        gauge("cephaloproxy_live", "Whether /health passes (1) or not (0)", float(live)),
        gauge(
            "cephaloproxy_squid_kids",
            "Squid kid processes (workers, coordinator, diskers) under the master",
            float(len(seen.kids)) if seen is not None else None,
        ),
        counter(
            "cephaloproxy_squid_kid_exits_total",
            "Squid kids that exited (Squid respawns them) since the health server started",
            float(watch.kid_exits_total),
        ),
        gauge(
            "cephaloproxy_squid_crash_loop",
            "Whether Squid's kids keep exiting (the crash loop /health reports)",
            float(watch.crash_loop() is not None),
        ),
    ]
