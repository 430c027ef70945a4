"""Benchmark (not a test): kubelet-style probes of the health server with no attack, then under one.

    python3 entrypoint/benchmark_health.py [--probes N] [--idle N] [--dribblers N]
    (or bazel run //entrypoint:benchmark_health)

The attack: N idle connections (default: as many as RLIMIT_NOFILE's hard limit allows, at most
10 000) and 64 clients sending a request head one byte every 0.4 s, each renewed when the server
drops it. Rows: probes answered 200 within 1 s (new connection each), their latency p50/p99, the
server's CPU time per probe (all its CPU in the phase, the attack's share included), its threads
and RSS. Goal (printed, never asserted): >= 99 % answered under the attack. The server runs from
this source tree against a stand-in Squid (a process holding a LISTEN socket); needs no pytest.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from entrypoint.harness import free_port  # noqa: E402
from entrypoint.health_attack import Attack, process_status, raise_fd_limit, run_probes  # noqa: E402

STAND_IN = (
    "import socket, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16)\n"
    "print(s.getsockname()[1], flush=True)\n"
    "time.sleep(3600)\n"
)


def start_server(root: Path, port: int) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """The stand-in Squid and the health server watching it."""
    stand_in = subprocess.Popen([sys.executable, "-c", STAND_IN], stdout=subprocess.PIPE)
    assert stand_in.stdout is not None
    proxy_port = int(stand_in.stdout.readline())
    comm = Path(f"/proc/{stand_in.pid}/comm").read_text().strip()
    (root / "squid.pid").write_text(f"{stand_in.pid}\n")
    (root / "squid.conf").write_text("http_port 3128\n")
    (root / "cache").mkdir()
    environment = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "entrypoint.healthcheck_cli",
            "--port",
            str(port),
            "--pid-file",
            str(root / "squid.pid"),
            "--squid-comm",
            comm,
            "--proxy-port",
            str(proxy_port),
            "--cache-dir",
            str(root / "cache"),
            "--config",
            str(root / "squid.conf"),
            "--log-level",
            "WARNING",
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
    )
    return stand_in, server


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


def phase(name: str, server_pid: int, port: int, probes: int) -> None:
    before = process_status(server_pid)
    peaks: list[dict[str, int]] = []
    results = run_probes(
        port,
        probes,
        interval=0.05,
        timeout=1.0,
        on_probe=lambda: peaks.append(process_status(server_pid)),
    )
    after = process_status(server_pid)
    answered = [latency * 1000 for latency in results if latency is not None]
    cpu_ms = (
        (after["cpu_ticks"] - before["cpu_ticks"]) * 1000 / os.sysconf("SC_CLK_TCK") / len(results)
    )
    print(
        f"{name:<34} {len(answered):>4}/{len(results):<4} {100 * len(answered) / len(results):6.1f} %"
        f"  p50 {percentile(answered, 0.5):7.2f} ms  p99 {percentile(answered, 0.99):7.2f} ms"
        f"  cpu/probe {cpu_ms:6.2f} ms  threads {max(p['Threads'] for p in peaks)}"
        f"  rss {max(p['VmRSS'] for p in peaks) / 1024:5.1f} MiB"
    )


def main() -> int:
    _, hard = raise_fd_limit()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--idle", type=int, default=max(min(10_000, hard - 1024), 0))
    parser.add_argument("--dribblers", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        stand_in, server = start_server(Path(tmp), port)
        try:
            deadline = time.monotonic() + 30
            while run_probes(port, 1, 0.0)[0] is None:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("the health server did not answer 200 within 30 s", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            print(
                f"health server pid {server.pid}; {args.probes} probes per row (1 s timeout, new connection each)"
            )
            phase("no attack", server.pid, port, args.probes)
            attack = Attack(port, idle=args.idle, dribblers=args.dribblers)
            attack.start()
            try:
                time.sleep(3.0)
                phase(
                    f"{args.idle} idle + {args.dribblers} dribbling", server.pid, port, args.probes
                )
            finally:
                attack.stop()
            print(
                f"attack: {attack.connects} connects, {attack.closed_by_server} dropped or answered by the server,"
                f" {attack.dribbled} dribbled sends; goal >= 99 % answered under attack"
            )
        finally:
            for process in (server, stand_in):
                process.kill()
                process.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
