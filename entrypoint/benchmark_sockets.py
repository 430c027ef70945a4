"""Benchmark (not a test): PID 1's socket checks against a ballast of idle connections (0 / 5k / 20k rows).

    python3 entrypoint/benchmark_sockets.py [--rows 0 5000 20000] [--rounds N]
    (or bazel run //entrypoint:benchmark_sockets)

A busy host has tens of thousands of TCP rows; PID 1's checks (wait for Squid to listen, the
drain's count of client connections, /health) must not cost more with them. The ballast: idle
loopback connections on a port nobody checks (each is two rows), held by this process and a
child (RLIMIT_NOFILE is per process). Rows per ballast: one check as the entrypoint makes it
(netlink sock_diag, filtered in the kernel) against reading and decoding /proc/net/tcp{,6} (the
old way), in the same run; PID 1's CPU seconds from its start to `Container ready`; and during
a drain (a 10 s download in flight at SIGTERM) from SIGTERM to its exit. Goals (printed, never
asserted): drain <= 0.1 CPU s and startup CPU unchanged at 20k rows. Uses the real Squid from
CEPHALOPROXY_SQUID_ROOT.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from entrypoint import proc_table
from entrypoint.benchmark_startup import DOWNLOAD_SECONDS, proxied_get
from entrypoint.benchmark_throughput import cpu_seconds, drained_pipe
from tests.entrypoint import harness
from tests.entrypoint.health_attack import raise_fd_limit

ACCEPTOR = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', 0)); s.listen(4096)\n"
    "print(s.getsockname()[1], flush=True)\n"
    "held = []\n"
    "while True:\n"
    "    held.append(s.accept()[0])\n"
)


class Ballast:
    """`rows` rows of idle connections in the namespace's TCP table (two rows per connection)."""

    def __init__(self, rows: int) -> None:
        self.clients: list[socket.socket] = []
        self.acceptor: subprocess.Popen[bytes] | None = None
        if rows <= 0:
            return
        self.acceptor = subprocess.Popen(
            [sys.executable, "-c", ACCEPTOR], stdout=subprocess.PIPE
        )  # inherits the raised RLIMIT_NOFILE
        assert self.acceptor.stdout is not None
        port = int(self.acceptor.stdout.readline())
        for _ in range(rows // 2):
            self.clients.append(socket.create_connection(("127.0.0.1", port), timeout=30))

    def close(self) -> None:
        for sock in self.clients:
            sock.close()
        if self.acceptor is not None:
            self.acceptor.kill()
            self.acceptor.wait(30)


def per_check(function, repeat: int = 20) -> float:
    """CPU seconds of one call (this process), the mean of `repeat`."""
    started = time.process_time()
    for _ in range(repeat):
        function()
    return (time.process_time() - started) / repeat


def startup_and_drain(origin: harness.LocalHttpServer) -> dict[str, float]:
    """PID 1's CPU to `Container ready`, and from SIGTERM to its exit with a download in flight."""
    workspace = harness.Workspace(bytecode=True)
    results: dict[str, float] = {}
    stdout, drainer = drained_pipe()
    ready = workspace.health_port
    try:
        run = harness.EntrypointRun(workspace, workspace.env(), stdout=stdout)
        os.close(stdout)
        try:
            harness.wait_for_status(f"http://127.0.0.1:{ready}/ready", 200, 120)
            results["PID 1 CPU s, start -> ready"] = cpu_seconds(run.pid)
            outcome: dict[str, int] = {}

            def fetch() -> None:
                outcome["size"] = proxied_get(
                    workspace.squid_port, f"http://127.0.0.1:{origin.port}/{DOWNLOAD_SECONDS}", 60
                )[1]

            fetcher = threading.Thread(target=fetch)
            fetcher.start()
            time.sleep(1.0)
            before = last = cpu_seconds(run.pid)
            run.process.send_signal(signal.SIGTERM)
            while run.process.poll() is None:
                try:
                    last = cpu_seconds(run.pid)
                except OSError:
                    break
                time.sleep(0.05)
            run.wait_exit(120)
            fetcher.join(60)
            results["PID 1 CPU s, drain (SIGTERM -> exit)"] = last - before
            results["download complete (1 = yes)"] = float(
                outcome.get("size") == DOWNLOAD_SECONDS * 10 * len(harness.PAYLOAD_CHUNK)
            )
        finally:
            run.cleanup()
            drainer.join(10)
    finally:
        workspace.remove()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[0, 5000, 20000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise_fd_limit()
    problem = harness.unprivileged_access_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    origin = harness.start_slow_origin()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    samples: dict[tuple[int, str], list[float]] = {}
    try:
        for rows in args.rows:
            ballast = Ballast(rows)
            try:
                table = len(proc_table.tcp_sockets())
                checks = {
                    "one check, netlink (us CPU)": per_check(
                        lambda: proc_table.sockets_on([port], proc_table.TCP_LISTEN)
                    )
                    * 1e6,
                    "one check, /proc/net/tcp (us CPU, old)": per_check(
                        lambda: proc_table.tcp_sockets(), 5
                    )
                    * 1e6,
                }
                for key, value in checks.items():
                    samples.setdefault((rows, key), []).append(value)
                samples.setdefault((rows, "rows in the TCP table"), []).append(table)
                for index in range(args.rounds):
                    for key, value in startup_and_drain(origin).items():
                        samples.setdefault((rows, key), []).append(value)
                    print(f"{rows} rows: round {index + 1}/{args.rounds} done", file=sys.stderr)
            finally:
                ballast.close()
    finally:
        listener.close()
        origin.close()
    print(
        f"Squid {'.'.join(map(str, harness.squid_version()))} from {harness.squid_root()},"
        f" Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()},"
        f" load average {os.getloadavg()[0]:.1f}; {args.rounds} rounds (n) per ballast"
    )
    print(f"{'ballast rows / measure':58} {'n':>3} {'median [min-max]':>26}")
    for (rows, key), values in samples.items():
        print(
            f"{rows:6d} {key:51} {len(values):3d} {statistics.median(values):11.4f} [{min(values):.4f}-{max(values):.4f}]"
        )
    baseline = min(args.rows)
    for key in (
        "one check, netlink (us CPU)",
        "PID 1 CPU s, start -> ready",
        "PID 1 CPU s, drain (SIGTERM -> exit)",
    ):
        base = samples.get((baseline, key))
        for rows in args.rows:
            measured = samples.get((rows, key))
            if rows == baseline or not base or not measured:
                continue
            # Round i at these rows against round i at the baseline (the same run, alternating
            # ballasts would not hold 20k connections between rounds).
            ratios = [a / b for a, b in zip(measured, base, strict=False) if b]
            if ratios:
                print(
                    f"{rows:6d} ratio {key} / {baseline} rows{'':{max(0, 36 - len(key))}}"
                    f" {len(ratios):3d} {statistics.median(ratios):11.4f}"
                    f" [{min(ratios):.4f}-{max(ratios):.4f}]"
                )
    print(
        "goals: drain <= 0.1 PID 1 CPU s at every ballast; start -> ready CPU and one check:"
        " ratio ~1.0 against the smallest ballast (O(our sockets), not O(the host's))"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
