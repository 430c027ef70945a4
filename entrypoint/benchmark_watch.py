"""Benchmark (not a test): what watch mode costs PID 1 when idle, and how fast a change reaches Squid.

    python3 entrypoint/benchmark_watch.py [--minutes M] [--windows N] [--swaps N] [--interval S]
    (or bazel run //entrypoint:benchmark_watch)

Idle cost: the real entrypoint with the real Squid, CONFIG_RELOAD=signal (the baseline, measured
in the same run) and CONFIG_RELOAD=watch at CONFIG_WATCH_INTERVAL (default 2 s), each left idle
for M minutes cut into N windows; PID 1's CPU time (its threads' schedstat, ns) per window,
extrapolated to one hour: mean, min, max, stdev over the N windows and the watch/signal ratio. Reaction: N kubelet-style `..data` swaps of the
config to another port, each timed from the swap to the new port proxying (polled every 50 ms).
Printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.entrypoint.harness import (
    EntrypointRun,
    Workspace,
    free_port,
    http_get,
    squid_path_directives,
    start_local_http_server,
)
from tests.entrypoint.kubelet_volume import KubeletVolume

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def config(workspace: Workspace, port: int) -> bytes:
    return (
        f"http_port 127.0.0.1:{port}\npid_filename {workspace.runtime_dir('run')}/squid.pid\n"
        "http_access allow localhost\nhttp_access deny all\ncache_log /dev/stderr\naccess_log none\n"
        "logfile_rotate 0\nvisible_hostname benchmark\nshutdown_lifetime 1 seconds\npinger_enable off\n"
        f"netdb_filename none\n{squid_path_directives()}"
    ).encode()


def cpu_seconds(pid: int) -> float:
    """PID 1's CPU time in ns resolution: the sum of its live threads' schedstat (the 10 ms ticks
    of /proc/<pid>/stat are too coarse for an idle process; idle, no thread comes and goes)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)
    return total / 1e9


def started(mode: str, interval: float) -> tuple[Workspace, KubeletVolume, EntrypointRun]:
    workspace = Workspace(bytecode=True)
    volume = KubeletVolume(workspace.etc / "custom")
    volume.publish({"squid.conf": config(workspace, workspace.squid_port)})
    env = workspace.env(
        CONFIG_RELOAD=mode,
        CONFIG_WATCH_INTERVAL=str(interval),
        CEPHALOPROXY_CONFIG=str(volume.path("squid.conf")),
    )
    run = EntrypointRun(workspace, env)
    run.wait_ready()
    return workspace, volume, run


def idle_cost(mode: str, interval: float, minutes: float, windows: int) -> list[float]:
    """PID 1's CPU seconds per hour in each window."""
    workspace, _, run = started(mode, interval)
    try:
        time.sleep(5)  # past the startup's last steps
        window = minutes * 60 / windows
        rates = []
        for _ in range(windows):
            before, began = cpu_seconds(run.pid), time.monotonic()
            time.sleep(window)
            rates.append((cpu_seconds(run.pid) - before) / (time.monotonic() - began) * 3600)
        return rates
    finally:
        run.cleanup()
        workspace.remove()


def proxies(port: int, origin_port: int) -> bool:
    try:
        return (
            http_get(
                f"http://127.0.0.1:{origin_port}/", timeout=5, proxy=f"http://127.0.0.1:{port}"
            )[0]
            == 200
        )
    except OSError:
        return False


def reaction_times(interval: float, swaps: int) -> list[float]:
    workspace, volume, run = started("watch", interval)
    origin = start_local_http_server("benchmark")
    try:
        times = []
        for _ in range(swaps):
            port = free_port()
            swapped = time.monotonic()
            volume.publish({"squid.conf": config(workspace, port)})
            while not proxies(port, origin.port):
                if time.monotonic() - swapped > 120:
                    raise SystemExit(
                        f"port {port} not served 120 s after the swap:\n{run.output[-3000:]}"
                    )
                time.sleep(0.05)
            times.append(time.monotonic() - swapped)
            time.sleep(interval * 2)
        return times
    finally:
        origin.close()
        run.cleanup()
        workspace.remove()


def describe(values: list[float], unit: str) -> str:
    spread = f"min {min(values):.3g}, max {max(values):.3g}"
    deviation = f", stdev {statistics.stdev(values):.3g}" if len(values) > 1 else ""
    return f"mean {statistics.mean(values):.3g} {unit} (n={len(values)}, {spread}{deviation})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="idle time per mode")
    parser.add_argument(
        "--windows", type=int, default=6, help="windows the idle time is cut into (n)"
    )
    parser.add_argument("--swaps", type=int, default=10, help="timed config swaps")
    parser.add_argument("--interval", type=float, default=2.0, help="CONFIG_WATCH_INTERVAL")
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; CONFIG_WATCH_INTERVAL={args.interval:g} s"
    )
    signal_mode = idle_cost("signal", args.interval, args.minutes, args.windows)
    print(f"PID 1 CPU idle, CONFIG_RELOAD=signal: {describe(signal_mode, 's/hour')}", flush=True)
    watch_mode = idle_cost("watch", args.interval, args.minutes, args.windows)
    print(f"PID 1 CPU idle, CONFIG_RELOAD=watch:  {describe(watch_mode, 's/hour')}", flush=True)
    baseline = statistics.mean(signal_mode)
    ratio = f"{statistics.mean(watch_mode) / baseline:.2f}x" if baseline > 0 else "n/a (baseline 0)"
    print(
        f"watch / signal: {ratio}; watch costs {statistics.mean(watch_mode) - baseline:.3g} s CPU per hour more",
        flush=True,
    )
    times = reaction_times(args.interval, args.swaps)
    print(f"..data swap -> new port proxying: {describe(times, 's')}")


if __name__ == "__main__":
    main()
