"""Benchmark (not a test): throughput at saturation through PID 1 against Squid alone, same run.

    python3 entrypoint/benchmark_throughput.py [--rounds N] [--seconds S] [--connections C ...]
    (or bazel run //entrypoint:benchmark_throughput; needs `wrk` on PATH)

Both subjects run the config the entrypoint rendered (access_log stdio:/dev/stdout, one line per
request): Squid alone writes it into a pipe this benchmark drains, the entrypoint relays it
(redaction, escaping, its output sink) into the same kind of pipe. wrk sends keep-alive GETs for
cacheable 100-byte objects (memory hits after the first) with C connections; rounds alternate
the subjects. Rows per subject: requests/s, p50 and p99 latency, and PID 1's CPU seconds per
10k requests (utime + stime from /proc). Printed: median [min-max] over the rounds and the
ratios entrypoint / Squid alone. Goals (printed, never asserted): throughput >= 0.97x, p99 <=
1.1x, PID 1 <= 0.05 CPU s per 10k requests. Uses the real Squid from CEPHALOPROXY_SQUID_ROOT.
"""

from __future__ import annotations

import argparse
import http.server
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from entrypoint.benchmark_startup import kill_squid_alone, proxied_get, start_squid_alone
from tests.entrypoint import harness

OBJECTS = 16  # distinct URLs (all cached after the warm-up)
BODY = b"x" * 99 + b"\n"
WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "http://127.0.0.1:{port}/o" .. (counter % {objects}), {{["Host"] = "127.0.0.1:{port}"}})
end
"""


class _Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards Squid

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Cache-Control", "max-age=3600")
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


def cpu_seconds(pid: int) -> float:
    """Time on a CPU of all of `pid`'s threads so far (/proc schedstat, in ns: exact, where
    utime/stime are sampled at clock ticks), its children's not included."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a thread that just ended
    return total / 1e9


def drained_pipe() -> tuple[int, threading.Thread]:
    """A pipe's write end whose reader discards everything (a log collector that keeps up)."""
    read_end, write_end = os.pipe()

    def drain() -> None:
        while os.read(read_end, 1 << 16):
            pass
        os.close(read_end)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    return write_end, thread


_LATENCY = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def run_wrk(proxy_port: int, script: Path, connections: int, seconds: int) -> dict[str, float]:
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{proxy_port}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    latency = {name: float(value) * _UNIT[unit] for name, value, unit in _LATENCY.findall(output)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests": requests,
        "rps": requests / seconds,
        "p50 ms": latency["50"],
        "p99 ms": latency["99"],
        "non-2xx": float(errors.group(1)) if errors else 0.0,
    }


def warm(proxy_port: int, origin_port: int) -> None:
    for index in range(OBJECTS):
        url = f"http://127.0.0.1:{origin_port}/o{index}"
        if not harness.wait_until(
            lambda url=url: proxied_get(proxy_port, url, 2)[0] == 200, 60, interval=0.05
        ):
            raise RuntimeError(f"no proxied 200 for {url} within 60 s")


def entrypoint_round(
    workspace: harness.Workspace, origin_port: int, script: Path, connections: int, seconds: int
) -> dict[str, float]:
    stdout, drainer = drained_pipe()
    run = harness.EntrypointRun(workspace, workspace.env(), stdout=stdout)
    os.close(stdout)
    try:
        warm(workspace.squid_port, origin_port)
        before = cpu_seconds(run.pid)
        result = run_wrk(workspace.squid_port, script, connections, seconds)
        result["pid1 cpu s / 10k req"] = (
            (cpu_seconds(run.pid) - before) / result["requests"] * 10_000
        )
        return result
    finally:
        run.cleanup()
        drainer.join(10)


def squid_alone_round(
    workspace: harness.Workspace, origin_port: int, script: Path, connections: int, seconds: int
) -> dict[str, float]:
    config = workspace.runtime_dir("run") / "squid.conf"  # what the entrypoint rendered, unchanged
    stdout, drainer = drained_pipe()
    squid = start_squid_alone(config, stdout)
    os.close(stdout)
    try:
        warm(workspace.squid_port, origin_port)
        return run_wrk(workspace.squid_port, script, connections, seconds)
    finally:
        kill_squid_alone(squid)
        drainer.join(10)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):10.3f} [{min(values):.3f}-{max(values):.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[20, 100])
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not on PATH", file=sys.stderr)
        return 1
    problem = harness.unprivileged_access_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    origin_port = int(origin.server_address[1])
    workspace = harness.Workspace(bytecode=True)
    samples: dict[tuple[int, str], dict[str, list[float]]] = {}
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
            handle.write(WRK_SCRIPT.format(port=origin_port, objects=OBJECTS))
        script = Path(handle.name)
        os.chmod(script, 0o644)
        for connections in args.connections:
            for index in range(args.rounds):
                for name, subject in (
                    ("entrypoint", entrypoint_round),
                    ("squid alone", squid_alone_round),
                ):
                    result = subject(workspace, origin_port, script, connections, args.seconds)
                    for key, value in result.items():
                        samples.setdefault((connections, name), {}).setdefault(key, []).append(
                            value
                        )
                print(
                    f"{connections} connections: round {index + 1}/{args.rounds} done",
                    file=sys.stderr,
                )
    finally:
        origin.shutdown()
        workspace.remove()
    print(
        f"Squid {'.'.join(map(str, harness.squid_version()))} from {harness.squid_root()},"
        f" Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()},"
        f" load average {os.getloadavg()[0]:.1f}; wrk {args.seconds} s per round, {args.rounds} rounds"
        f" (n) per subject, access log on stdout (one line per request)"
    )
    print(f"{'connections / subject / measure':52} {'n':>3} {'median [min-max]':>24}")
    for connections in args.connections:
        ours, alone = samples[(connections, "entrypoint")], samples[(connections, "squid alone")]
        for name, measured in (("entrypoint", ours), ("squid alone", alone)):
            for key in ("rps", "p50 ms", "p99 ms", "non-2xx", "pid1 cpu s / 10k req"):
                if key in measured:
                    print(
                        f"{connections:4d} {name:12} {key:33} {len(measured[key]):3d} {summary(measured[key])}"
                    )
        for key, goal in (("rps", ">= 0.97"), ("p50 ms", ""), ("p99 ms", "<= 1.1")):
            ratios = [a / b for a, b in zip(ours[key], alone[key], strict=False) if b]
            if ratios:
                print(
                    f"{connections:4d} ratio {key} entrypoint / squid alone{(' goal ' + goal) if goal else '':17} {len(ratios):3d} {summary(ratios)}"
                )
        print(f"{connections:4d} goal PID 1 <= 0.050 CPU s per 10k requests (<= 5 us per line)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
