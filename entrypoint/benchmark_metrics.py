"""Benchmark (not a test): what a /metrics scrape every 15 s costs next to Squid alone, under proxy load.

    python3 entrypoint/benchmark_metrics.py [--scrapes N] [--interval S] [--clients N]
    (or bazel run //entrypoint:benchmark_metrics)

The real entrypoint and the real Squid (Workspace, bytecode like the image), a local origin and
N client threads proxying through Squid (hits and misses) for the whole run. Phase 1: the load
alone for scrapes x interval seconds. Phase 2: the same load with one scrape every interval.
Printed: Squid's and the health server's CPU per second in each phase, and per scrape its wall
time (n, min, median, max) and the CPU it cost (phase 2 minus phase 1, spread over the scrapes).
Ratios only, measured in the same run; nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from entrypoint.proc_table import process_tree
from tests.entrypoint.harness import (
    EntrypointRun,
    Workspace,
    http_get,
    squid_version,
    start_local_http_server,
)

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids` (those still alive), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def health_server_pid(entrypoint_pid: int) -> int:
    for process in process_tree(entrypoint_pid)[1:]:
        try:
            if b"entrypoint.healthcheck_cli" in Path(f"/proc/{process.pid}/cmdline").read_bytes():
                return process.pid
        except OSError:
            continue
    raise RuntimeError("no health server under the entrypoint")


def load(proxy: str, origin_port: int, stop: threading.Event, done: list[int]) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    count = 0
    while not stop.is_set():
        try:
            with opener.open(
                f"http://127.0.0.1:{origin_port}/object-{count % 200}", timeout=10
            ) as answer:
                answer.read()
        except OSError:
            pass
        count += 1
    done.append(count)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase's result: CPU seconds per second of Squid and of the health server, scrape and probe walls."""

    elapsed: float
    squid: float
    health: float
    walls: list[float]
    probes: list[float]


def measure(
    pids: list[int], health: int, scrapes: int, interval: float, scrape_url: str | None
) -> Phase:
    """CPU rates over scrapes x interval seconds; with `scrape_url`, one scrape at the start of each interval."""
    squid_before, health_before = cpu_seconds(pids), cpu_seconds([health])
    started = time.monotonic()
    walls: list[float] = []
    probes: list[
        float
    ] = []  # a /health probe right after each scrape: the same path's floor on this machine
    for index in range(scrapes):
        time.sleep(max(0.0, started + index * interval - time.monotonic()))
        if scrape_url is not None:
            began = time.monotonic()
            status = http_get(scrape_url, timeout=30)[0]
            walls.append(time.monotonic() - began if status == 200 else float("nan"))
            began = time.monotonic()
            http_get(scrape_url.replace("/metrics", "/health"), timeout=30)
            probes.append(time.monotonic() - began)
    time.sleep(max(0.0, started + scrapes * interval - time.monotonic()))
    elapsed = time.monotonic() - started
    return Phase(
        elapsed=elapsed,
        squid=(cpu_seconds(pids) - squid_before) / elapsed,
        health=(cpu_seconds([health]) - health_before) / elapsed,
        walls=walls,
        probes=probes,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scrapes", type=int, default=8)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    workspace = Workspace(bytecode=True)
    origin = start_local_http_server(
        "x" * 4096, cache_control="public, max-age=600"
    )  # a URL asked again is a hit
    run = EntrypointRun(workspace, workspace.env())
    stop = threading.Event()
    done: list[int] = []
    try:
        squid_pid = run.wait_ready()
        health = health_server_pid(run.pid)
        pids = [process.pid for process in process_tree(squid_pid)]
        proxy = f"http://127.0.0.1:{workspace.squid_port}"
        clients = [
            threading.Thread(target=load, args=(proxy, origin.port, stop, done), daemon=True)
            for _ in range(args.clients)
        ]
        for client in clients:
            client.start()
        time.sleep(2.0)  # the cache warms, the load settles
        seconds = args.scrapes * args.interval
        alone = measure(pids, health, args.scrapes, args.interval, None)
        scraped = measure(
            pids,
            health,
            args.scrapes,
            args.interval,
            f"http://127.0.0.1:{workspace.health_port}/metrics",
        )
        stop.set()
        for client in clients:
            client.join(30)
    finally:
        stop.set()
        run.cleanup()
        origin.close()
        workspace.remove()
    walls = sorted(wall * 1000 for wall in scraped.walls)
    probes = sorted(probe * 1000 for probe in scraped.probes)
    n = len(walls)
    squid_alone, squid_scraped = alone.squid, scraped.squid
    health_alone, health_scraped = alone.health, scraped.health
    elapsed = scraped.elapsed

    def per_scrape(rate_b: float, rate_a: float) -> float:
        return (rate_b - rate_a) * elapsed / max(n, 1) * 1000

    print(
        f"Squid {'.'.join(map(str, squid_version()))}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs;"
        f" {args.clients} proxy clients throughout ({sum(done)} requests), phases of {seconds:g} s"
    )
    print(f"{'phase':<30} {'Squid CPU':>12} {'health server CPU':>20}")
    print(
        f"{'Squid alone (no scrapes)':<30} {squid_alone * 1000:9.1f} ms/s {health_alone * 1000:17.2f} ms/s"
    )
    print(
        f"{f'a scrape every {args.interval:g} s':<30} {squid_scraped * 1000:9.1f} ms/s {health_scraped * 1000:17.2f} ms/s"
    )
    print(
        f"scrape wall time (n={n}): min {walls[0]:.1f} ms, median {walls[n // 2]:.1f} ms, max {walls[-1]:.1f} ms;"
        f" a /health probe after each: min {probes[0]:.1f} ms, median {probes[n // 2]:.1f} ms, max {probes[-1]:.1f} ms"
    )
    print(
        f"CPU per scrape (phase 2 - phase 1, n={n}): health server {per_scrape(health_scraped, health_alone):.1f} ms,"
        f" Squid {per_scrape(squid_scraped, squid_alone):.1f} ms (noise: the load's own variation)"
    )
    print(f"ratio Squid CPU with scrapes / alone: {squid_scraped / squid_alone:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
