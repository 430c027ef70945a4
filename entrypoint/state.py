"""What PID 1 knows about the proxy it runs: settings, children, active config, Squid, health server."""

from __future__ import annotations

import dataclasses
import logging

from entrypoint.health_process import HealthProcess
from entrypoint.log_relay import LineFilter, identity
from entrypoint.metrics_state import EntrypointMetrics
from entrypoint.output_sink import OutputSink
from entrypoint.processes import ChildProcesses
from entrypoint.settings import Settings
from entrypoint.squid_config import ActiveConfig
from entrypoint.squid_process import SquidCommands, SquidProcess


@dataclasses.dataclass
class ProxyState:
    settings: Settings
    log: logging.Logger
    children: ChildProcesses
    commands: SquidCommands
    health: HealthProcess
    sinks: tuple[OutputSink, OutputSink]
    line_filter: LineFilter = (
        identity  # applied to every line Squid writes (a redactor plugs in here)
    )
    config: ActiveConfig | None = None
    # What the last skipped reload read (files, include patterns, the TLS pair it needed):
    # watch mode watches these too until a reload succeeds, so a fix there is a change.
    attempted_paths: tuple[str, ...] = ()
    squid: SquidProcess | None = None
    squid_pid: int | None = None
    metrics: EntrypointMetrics = dataclasses.field(
        default_factory=EntrypointMetrics
    )  # what /metrics shows of PID 1
