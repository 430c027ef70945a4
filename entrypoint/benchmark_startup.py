"""Benchmark (not a test): the entrypoint against Squid alone, same config, same machine, same run.

    python3 entrypoint/benchmark_startup.py [--runs N]      (or bazel run //entrypoint:benchmark_startup)

The entrypoint's package is precompiled as in the image (unchecked-hash .pyc). `--phases N`
adds N restarts at LOG_LEVEL=DEBUG and prints their phases (the time to `Container ready`).

Rows: start -> first proxied 200 (first start, with `squid -z`, and a restart on the same dirs);
SIGTERM -> exit when idle; SIGTERM with a 10 s download in flight (does it arrive in full, how
soon after its end does the entrypoint exit); RSS of PID 1 and of the health server. Then what
the entrypoint adds to Squid alone's start (same rendered config, cache made, with and without
cache_dir), each pair measured back to back: the difference and the ratio. Goals (printed, never
asserted): start ratio <= 1.5, added start <= 0.10 s, idle stop <= 1.5 s, exit <= 1.5 s after
the download's end. `--added-only` measures the added start alone (quicker). Uses the real Squid
from CEPHALOPROXY_SQUID_ROOT (default "/"); needs no pytest.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
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

from tests.entrypoint import harness

DOWNLOAD_SECONDS = 10


def proxied_get(proxy_port: int, url: str, timeout: float) -> tuple[int, int]:
    """(status, body bytes) of a GET through the proxy; (0, 0) when it fails."""
    request = f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection(("127.0.0.1", proxy_port), timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return 0, 0
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/\d\.\d (\d+)", head)
    return (int(match.group(1)) if match else 0), len(body)


def first_200(proxy_port: int, origin: harness.LocalHttpServer, started: float) -> float:
    url = f"http://127.0.0.1:{origin.port}/0"
    if not harness.wait_until(
        lambda: proxied_get(proxy_port, url, 2)[0] == 200, 120, interval=0.01
    ):
        raise RuntimeError("no proxied 200 within 120 s")
    return time.monotonic() - started


def rss_kib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    return 0.0


def health_pid(entrypoint_pid: int) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if (
                b"healthcheck_cli" in cmdline
                and int(stat[stat.rindex(")") + 2 :].split()[1]) == entrypoint_pid
            ):
                return int(entry)
    return None


def entrypoint_run(
    origin: harness.LocalHttpServer, results: dict[str, float], download: bool
) -> None:
    workspace = harness.Workspace(bytecode=True)
    try:
        started = time.monotonic()
        run = harness.EntrypointRun(workspace, workspace.env())
        try:
            if download:
                run.wait_for_output(r"Container ready", 120)
                outcome: dict[str, float] = {}

                def fetch() -> None:
                    _, size = proxied_get(
                        workspace.squid_port,
                        f"http://127.0.0.1:{origin.port}/{DOWNLOAD_SECONDS}",
                        60,
                    )
                    outcome["end"], outcome["size"] = time.monotonic(), size

                fetcher = threading.Thread(target=fetch)
                fetcher.start()
                time.sleep(1.0)
                run.process.send_signal(signal.SIGTERM)
                run.wait_exit(120)
                exited = time.monotonic()
                fetcher.join(60)
                complete = outcome.get("size") == DOWNLOAD_SECONDS * 10 * len(harness.PAYLOAD_CHUNK)
                results["entrypoint: 10 s download at SIGTERM arrives complete (1 = yes)"] = float(
                    complete
                )
                results["entrypoint: exit after the download's end"] = exited - outcome.get(
                    "end", exited
                )
                return
            results["entrypoint: start -> first proxied 200"] = first_200(
                workspace.squid_port, origin, started
            )
            run.wait_for_output(r"Container ready", 120)
            time.sleep(0.5)
            results["RSS PID 1 (KiB)"] = rss_kib(run.pid)
            health = health_pid(run.pid)
            if health is not None:
                results["RSS health server (KiB)"] = rss_kib(health)
            signalled = time.monotonic()
            run.process.send_signal(signal.SIGTERM)
            run.wait_exit(120)
            results["entrypoint: SIGTERM -> exit, idle"] = time.monotonic() - signalled
        finally:
            run.cleanup()
        if not download:
            # Again on the same dirs: the cache exists, so no `squid -z` (as for Squid alone).
            started = time.monotonic()
            run = harness.EntrypointRun(workspace, workspace.env())
            try:
                results["entrypoint: restart (cache made) -> first proxied 200"] = first_200(
                    workspace.squid_port, origin, started
                )
                run.wait_for_output(r"Container ready", 120)
            finally:
                run.cleanup()
            squid_alone(workspace, origin, results)
    finally:
        workspace.remove()


def start_squid_alone(config: Path, stdout: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Squid in the foreground with `config`, as the entrypoint's Squid runs (its user, its own session)."""
    options = harness._child_user_options()
    if stdout != subprocess.DEVNULL:
        harness.give_pipe_to(stdout, options.get("user"))  # Squid reopens /dev/stdout
    return subprocess.Popen(
        [str(harness.squid_bin()), "--foreground", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        **options,
    )


def kill_squid_alone(squid: subprocess.Popen[bytes]) -> None:
    for pid in harness.session_processes(squid.pid):
        os.kill(pid, signal.SIGKILL)
    if squid.poll() is None:
        squid.kill()
        squid.wait()


def squid_alone(
    workspace: harness.Workspace, origin: harness.LocalHttpServer, results: dict[str, float]
) -> None:
    """Baseline: Squid with the config the entrypoint rendered (cache already made)."""
    rendered = workspace.runtime_dir("run") / "squid.conf"
    text = rendered.read_text()
    for name, lifetime, stop in (
        ("SIGTERM", "5 seconds", signal.SIGTERM),
        ("SIGINT", None, signal.SIGINT),
    ):
        config = rendered
        if lifetime is not None:  # Squid alone waits its whole lifetime: use the old default 5 s
            config = workspace.runtime_dir("run") / "squid-alone.conf"
            config.write_text(
                re.sub(r"(?m)^shutdown_lifetime .*$", f"shutdown_lifetime {lifetime}", text)
            )
            os.chmod(config, 0o664)
        started = time.monotonic()
        squid = start_squid_alone(config)
        try:
            if stop == signal.SIGTERM:
                results["squid alone: start -> first proxied 200"] = first_200(
                    workspace.squid_port, origin, started
                )
            else:
                first_200(workspace.squid_port, origin, started)
            time.sleep(0.5)
            signalled = time.monotonic()
            squid.send_signal(stop)
            squid.wait(120)
            label = f"squid alone: {name} -> exit, idle" + (
                f" (shutdown_lifetime {lifetime})" if lifetime else ""
            )
            results[label] = time.monotonic() - signalled
        finally:
            kill_squid_alone(squid)


def own_cpu_seconds(entrypoint_pid: int) -> float:
    """CPU used so far by the entrypoint's processes other than Squid's: PID 1 with the children
    it reaped (the config check) and the health server. On a busy machine this, not the wall
    time, is what competes with Squid's own start (10 ms ticks)."""
    ticks = 0
    for pid in harness.session_processes(entrypoint_pid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if pid != entrypoint_pid and "squid" in comm:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (proc(5) fields 14, 15)
        if pid == entrypoint_pid:
            ticks += int(fields[13]) + int(fields[14])  # its reaped children's
    return ticks / os.sysconf("SC_CLK_TCK")


def added_start(
    origin: harness.LocalHttpServer, results: dict[str, float], cache_dir: bool
) -> None:
    """Start -> first proxied 200 of the entrypoint and of Squid alone with the config it rendered
    (cache made, so no `squid -z` for either); without cache_dir Squid's own start is short and
    what the entrypoint adds shows plainly."""
    workspace = harness.Workspace(bytecode=True)
    label = "with cache_dir" if cache_dir else "no cache_dir"
    try:
        if (
            not cache_dir
        ):  # the default config as a custom one (its paths made the workspace's), minus cache_dir
            text = workspace.default_config.read_text()
            workspace.write_custom_config(
                re.sub(r"(?m)^cache_dir .*$", "", text)
                .replace("http_port 3128", f"http_port {workspace.squid_port}")
                .replace("/var/run/squid", str(workspace.runtime_dir("run")))
                .replace("/var/spool/squid", str(workspace.runtime_dir("spool")))
            )
        for _attempt in ("make the cache", "measure"):
            started = time.monotonic()
            run = harness.EntrypointRun(workspace, workspace.env())
            try:
                took = first_200(workspace.squid_port, origin, started)
                own_cpu = own_cpu_seconds(run.pid)
                run.wait_for_output(r"Container ready", 120)
            finally:
                run.cleanup()
        rendered = workspace.runtime_dir("run") / "squid.conf"
        started = time.monotonic()
        squid = start_squid_alone(rendered)
        try:
            alone = first_200(workspace.squid_port, origin, started)
        finally:
            kill_squid_alone(squid)
        results[f"{ADDED} {label}: entrypoint - squid alone (s)"] = took - alone
        results[f"{ADDED} {label}: entrypoint / squid alone"] = took / alone
        results[f"{ADDED} {label}: squid alone start -> 200 (s)"] = alone
        results[f"{ADDED} {label}: CPU not Squid's until the 200 (s)"] = own_cpu
    finally:
        workspace.remove()


ADDED = "added start"
ADDED_GOAL = 0.10  # seconds over Squid alone (issue 27 goal 3)
PHASE_LINE = re.compile(r"\[DEBUG\] Phase (\w+) took ([\d.]+) s")


def phase_run(origin: harness.LocalHttpServer, samples: dict[str, list[float]]) -> None:
    """One start with LOG_LEVEL=DEBUG (cache made first): where the time to `Container ready` goes."""
    workspace = harness.Workspace(bytecode=True)
    try:
        for attempt in ("make the cache", "measure"):
            run = harness.EntrypointRun(workspace, workspace.env(LOG_LEVEL="DEBUG"))
            try:
                run.wait_for_output(r"Container ready", 120)
                if attempt == "measure":
                    for name, seconds in PHASE_LINE.findall(run.stdout):
                        samples.setdefault(f"phase {name}", []).append(float(seconds))
            finally:
                run.cleanup()
    finally:
        workspace.remove()


def summary_row(key: str, values: list[float]) -> str:
    return (
        f"{key:66} {len(values):3d} {statistics.median(values):9.3f}"
        f" {min(values):9.3f} {max(values):9.3f}"
    )


def print_added_start(samples: dict[str, list[float]]) -> None:
    """The goal line per config: median [min-max] of the difference and of the ratio, and n."""
    for label in ("with cache_dir", "no cache_dir"):
        added = samples.get(f"{ADDED} {label}: entrypoint - squid alone (s)", [])
        ratio = samples.get(f"{ADDED} {label}: entrypoint / squid alone", [])
        cpu = samples.get(f"{ADDED} {label}: CPU not Squid's until the 200 (s)", [])
        if not added:
            continue
        median = statistics.median(added)
        print(
            f"added start, {label}: +{median:.3f} s [{min(added):.3f}-{max(added):.3f}],"
            f" {statistics.median(ratio):.2f}x [{min(ratio):.2f}-{max(ratio):.2f}] of Squid"
            f" alone (n={len(added)}); goal <= {ADDED_GOAL:.2f} s:"
            f" {'met' if median <= ADDED_GOAL else 'not met'}; CPU besides Squid's until the"
            f" 200: {statistics.median(cpu):.3f} s [{min(cpu):.3f}-{max(cpu):.3f}]"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--phases", type=int, default=0, help="more restarts at LOG_LEVEL=DEBUG: their phases"
    )
    parser.add_argument(
        "--added-only",
        action="store_true",
        help="only the added start over Squid alone (and --phases): no stop, download or RSS rows",
    )
    args = parser.parse_args()
    problem = harness.unprivileged_access_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    origin = harness.start_slow_origin()
    samples: dict[str, list[float]] = {}
    load_before = os.getloadavg()[0]
    try:
        for index in range(args.runs):
            for download in () if args.added_only else (False, True):
                results: dict[str, float] = {}
                entrypoint_run(origin, results, download)
                for key, value in results.items():
                    samples.setdefault(key, []).append(value)
            results = {}
            for cache_dir in (True, False):
                added_start(origin, results, cache_dir)
            for key, value in results.items():
                samples.setdefault(key, []).append(value)
            print(f"run {index + 1}/{args.runs} done", file=sys.stderr)
        for _ in range(args.phases):
            phase_run(origin, samples)
    finally:
        origin.close()
    start = samples.get("entrypoint: start -> first proxied 200", [])
    alone = samples.get("squid alone: start -> first proxied 200", [])
    restart = samples.get("entrypoint: restart (cache made) -> first proxied 200", [])
    ratios = [a / b for a, b in zip(start, alone, strict=False)]
    restart_ratios = [a / b for a, b in zip(restart, alone, strict=False)]
    print(
        f"Squid {'.'.join(map(str, harness.squid_version()))} from {harness.squid_root()},"
        f" Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
    )
    print(
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
        " (a shared machine: absolute times vary with it, ratios less)"
    )
    print(f"{'measure':66} {'n':>3} {'median':>9} {'min':>9} {'max':>9}")
    rows = list(samples.items()) + [
        ("ratio first start -> 200 (entrypoint / squid alone), goal <= 1.5", ratios),
        ("ratio restart -> 200 (entrypoint / squid alone), goal <= 1.5", restart_ratios),
    ]
    for key, values in rows:
        if values:
            print(summary_row(key, values))
    print_added_start(samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
