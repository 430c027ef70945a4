"""Benchmark (not a test): kubelet-style probes of the health server with no attack, then under one.

    python3 entrypoint/benchmark_health.py [--probes N] [--scrapes N] [--idle N] [--dribblers N]
    (or bazel run //entrypoint:benchmark_health)

Rows: probes answered 200 within 1 s (new connection each, one every 50 ms), their latency
p50/p99, the server's CPU per probe (schedstat of all its threads around each probe, the Squid
sampler's share included: median [p10-p90] and mean over n), its threads and RSS. Then the
same for a bare Python server that checks nothing (the floor any Python server pays per
probe), measured in the same run, and the ratios; and /metrics scrapes (the health server's
CPU and the wall time of one scrape, n and spread; the stand-in answers the cache manager with
short canned reports). Goal (printed, never asserted): <= 0.2 ms CPU per /health and /ready probe.

The attack: N idle connections (default: as many as RLIMIT_NOFILE's hard limit allows, at most
10 000) and 64 clients sending a request head one byte every 0.4 s, each renewed when the server
drops it (CPU per probe there includes the attack's). Goal: >= 99 % answered under the attack.
The server runs from this source tree against a stand-in Squid (a process holding a LISTEN
socket); needs no pytest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from entrypoint.benchmark_throughput import cpu_seconds
from tests.entrypoint.harness import free_port
from tests.entrypoint.health_attack import Attack, process_status, raise_fd_limit, run_probes

# The stand-in Squid holds the proxy port's LISTEN socket and answers the cache manager's
# three reports (what a /metrics scrape reads) with short canned ones.
STAND_IN = """
import socket
REPORTS = {
    b"counters": b"sample_time = 1796614651.25 (Mon, 07 Dec 2026 03:37:31 GMT)\\n"
    b"client_http.requests = 12\\nclient_http.hits = 5\\nclient_http.errors = 1\\n"
    b"client_http.kbytes_in = 3\\nclient_http.kbytes_out = 40\\nserver.all.requests = 7\\n"
    b"cpu_time = 0.044099\\n",
    b"info": b"Squid Object Cache: Version 7.7\\nResource usage for squid:\\n"
    b"\\tUP Time:\\t381.5 seconds\\n\\tMaximum Resident Size: 97104 KB\\n"
    b"File descriptor usage for squid:\\n\\tMaximum number of file descriptors:   20000\\n",
    b"service_times": b"Service Time Percentiles            5 min    60 min:\\n"
    b"\\tHTTP Requests (All):  50%   0.01235  0.04460\\n",
}
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    conn, _ = s.accept()
    conn.settimeout(2)
    try:
        head = b""
        while b"\\r\\n\\r\\n" not in head and len(head) < 8192:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
        target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
        body = next((text for name, text in REPORTS.items() if name in target), b"")
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: %d\\r\\n"
                     b"Connection: close\\r\\n\\r\\n%s" % (len(body), body))
    except OSError:
        pass
    conn.close()
"""
PROBE_INTERVAL = (
    0.05  # between probes (kubelet's default period is 10 s: each probe finds the server idle)
)


# The floor any Python server pays per probe (accept, read, answer, close) with no check at all:
# the health server's CPU per probe is printed beside it, measured in the same run.
BARE_SERVER = (
    "import socket, sys\n"
    "s = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n"
    "answer = b'HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\nConnection: close\\r\\n\\r\\nOK\\n'\n"
    "while True:\n"
    "    conn, _ = s.accept()\n"
    "    head = b''\n"
    "    while b'\\r\\n\\r\\n' not in head:\n"
    "        chunk = conn.recv(4096)\n"
    "        if not chunk: break\n"
    "        head += chunk\n"
    "    conn.sendall(answer)\n"
    "    conn.close()\n"
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
            "--metrics",
            "on",
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


def spread(values: list[float]) -> str:
    """median [p10-p90] of `values` (ms)."""
    return f"{statistics.median(values):6.3f} [{percentile(values, 0.1):.3f}-{percentile(values, 0.9):.3f}]"


def phase(
    name: str,
    server_pid: int,
    port: int,
    probes: int,
    path: str = "/health",
    timeout: float = 1.0,
    interval: float = PROBE_INTERVAL,
) -> tuple[list[float], list[float]]:
    """`probes` probes of `path`, one row printed; returns (CPU ms per probe, latencies ms of those answered)."""
    start = cpu_seconds(server_pid)
    peaks: list[dict[str, int]] = []
    cpu: list[float] = []
    results: list[float | None] = []
    for _ in range(probes):
        # The window runs from just before one probe to just before the next: each holds one
        # whole probe (the close of one is handled while the client sleeps).
        before = cpu_seconds(server_pid)
        results += run_probes(port, 1, interval, timeout, path=path)
        peaks.append(process_status(server_pid))
        cpu.append((cpu_seconds(server_pid) - before) * 1000)
    answered = [latency * 1000 for latency in results if latency is not None]
    mean_ms = (cpu_seconds(server_pid) - start) * 1000 / len(results)
    print(
        f"{name:<34} {len(answered):>4}/{len(results):<4} {100 * len(answered) / len(results):6.1f} %"
        f"  p50 {percentile(answered, 0.5):7.2f} ms  p99 {percentile(answered, 0.99):7.2f} ms"
        f"  cpu/probe {spread(cpu)} mean {mean_ms:6.3f} ms  threads {max(p['Threads'] for p in peaks)}"
        f"  rss {max(p['VmRSS'] for p in peaks) / 1024:5.1f} MiB"
    )
    return cpu, answered


def main() -> int:
    _, hard = raise_fd_limit()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=20)
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
            health = phase("no attack", server.pid, port, args.probes)[0]
            ready = phase("no attack, /ready", server.pid, port, args.probes, "/ready")[0]
            bare_port = free_port()
            bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port)])
            try:
                while run_probes(bare_port, 1, 0.0)[0] is None and bare.poll() is None:
                    time.sleep(0.05)
                floor = phase(
                    "bare server, no check (the floor)", bare.pid, bare_port, args.probes
                )[0]
            finally:
                bare.kill()
                bare.wait(10)
            for path, cpu in (("/health", health), ("/ready", ready)):
                print(
                    f"{path:<8} cpu/probe median {statistics.median(cpu):.3f} ms = "
                    f"{statistics.median(cpu) / statistics.median(floor):.2f}x the bare floor "
                    f"({statistics.median(floor):.3f} ms), n={len(cpu)} each; goal <= 0.2 ms"
                )
            scrape_cpu, scrape_wall = phase(
                "/metrics scrape", server.pid, port, args.scrapes, "/metrics", 5.0, 0.2
            )
            if scrape_wall:
                print(
                    f"/metrics scrape: health server cpu {spread(scrape_cpu)} ms, wall"
                    f" {spread(scrape_wall)} ms (median [p10-p90], n={len(scrape_cpu)}, the stand-in's"
                    " canned manager reports)"
                )
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
