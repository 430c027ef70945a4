"""Benchmark (not a test): entrypoint start-to-/ready time by phase, SIGTERM-to-exit time,
beside Squid alone (same config, same machine, same run) as the baseline.

    python3 entrypoint/benchmark_startup.py [--runs N]      (or bazel run //entrypoint:benchmark_startup)

Uses the real Squid from CEPHALOPROXY_SQUID_ROOT (default "/"). Prints mean/min/max.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from entrypoint import testing  # noqa: E402


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def ready(url: str) -> bool:
    try:
        return testing.http_get(url, timeout=2)[0] == 200
    except OSError:
        return False


def one_run() -> dict[str, float]:
    workspace = testing.Workspace()
    results: dict[str, float] = {}
    try:
        env = workspace.env(LOG_LEVEL="DEBUG")
        started = time.monotonic()
        run = testing.EntrypointRun(workspace, env)
        try:
            url = f"http://127.0.0.1:{workspace.health_port}/ready"
            if not testing.wait_until(lambda: ready(url), 120, interval=0.01):
                raise RuntimeError(f"entrypoint never became ready:\n{run.output}")
            results["entrypoint: start -> /ready 200"] = time.monotonic() - started
            signalled = time.monotonic()
            run.process.send_signal(signal.SIGTERM)
            run.wait_exit(120)
            results["entrypoint: SIGTERM -> exit"] = time.monotonic() - signalled
            for name, seconds in re.findall(r"Phase (\w+) took ([\d.]+) s", run.stdout):
                results[f"  phase {name}"] = float(seconds)
        finally:
            run.cleanup()

        # Baseline: Squid alone with the config the entrypoint rendered (cache already made).
        config = workspace.runtime_dir("run") / "squid.conf"
        started = time.monotonic()
        squid = subprocess.Popen(
            [str(testing.squid_bin()), "--foreground", "-d", "0", "-f", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, **testing._child_user_options(),  # type: ignore[arg-type]
        )
        try:
            if not testing.wait_until(lambda: accepts(workspace.squid_port), 120, interval=0.01):
                raise RuntimeError("Squid alone never accepted connections")
            results["squid alone: start -> accepts"] = time.monotonic() - started
            signalled = time.monotonic()
            squid.send_signal(signal.SIGTERM)
            squid.wait(120)
            results["squid alone: SIGTERM -> exit"] = time.monotonic() - signalled
        finally:
            for pid in testing.session_processes(squid.pid):
                os.kill(pid, signal.SIGKILL)
            if squid.poll() is None:
                squid.kill()
                squid.wait()
        results["ratio start (entrypoint / squid alone)"] = (
            results["entrypoint: start -> /ready 200"] / results["squid alone: start -> accepts"]
        )
        results["ratio stop (entrypoint / squid alone)"] = (
            results["entrypoint: SIGTERM -> exit"] / results["squid alone: SIGTERM -> exit"]
        )
    finally:
        workspace.remove()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    problem = testing.unprivileged_access_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    samples: dict[str, list[float]] = {}
    for index in range(args.runs):
        for key, value in one_run().items():
            samples.setdefault(key, []).append(value)
        print(f"run {index + 1}/{args.runs} done", file=sys.stderr)
    print(f"Squid {'.'.join(map(str, testing.squid_version()))} from {testing.squid_root()}, {args.runs} runs")
    print(f"{'measure':44} {'mean':>9} {'min':>9} {'max':>9}")
    for key, values in samples.items():
        unit = "" if key.startswith("ratio") else " s"
        print(f"{key:44} {statistics.mean(values):9.3f} {min(values):9.3f} {max(values):9.3f}{unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
