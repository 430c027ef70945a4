"""Benchmarks for the image (printed, never asserted): startup, stop, size, proxy throughput.

    python3 tests/acceptance/benchmark.py --runs 5 [--image REF | --tarball PATH]
    bazel run //tests/acceptance:benchmark -- --runs 5

Each run starts fresh containers. Baselines are measured in the same run so the numbers
read as ratios on whatever machine this is: the runtime's own start cost (a container
running `python3 -c pass`), Squid alone in the same image (`--entrypoint /usr/sbin/squid`
with the packaged default config, stopped with SIGINT, its fastest clean stop) for start ->
first proxied 200 and the idle stop and the burst's throughput (issue 27: >= 0.97x), and the same burst sent straight
to the server. Goals (issue 11): start <= 1.5x Squid alone, idle stop <= 1.5 s, a 10 s
download in flight at `stop` arrives complete and the exit follows within 1.5 s of its end.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from tests.support import harness, image_source, netutil, timeouts
from tests.support.runtime import ContainerRuntime, Mount, PortMapping, RunOptions, detect_runtime


def _spread(name: str, unit: str, values: Sequence[float]) -> str:
    if not values:
        return f"{name:<34} (no successful runs)"
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return (
        f"{name:<34} n={len(values)}  min {min(values):9.3f}  median {statistics.median(values):9.3f}"
        f"  max {max(values):9.3f}  stdev {deviation:8.3f} {unit}"
    )


def _runtime_start_baseline(factory: harness.ContainerFactory) -> float:
    started = time.monotonic()
    done = factory.runtime.run_once(
        factory.image,
        RunOptions(
            name=factory.unique_name("baseline"), entrypoint=harness.PYTHON, command=("-c", "pass")
        ),
    )
    if done.returncode != 0:
        raise SystemExit(f"baseline container failed: {done.stderr.strip()}")
    return time.monotonic() - started


DOWNLOAD_SECONDS = 10


def _first_proxied_200(
    port: int, url: str, started: float, still_running: Callable[[], bool]
) -> float:
    """Seconds from `started` until a GET of `url` through 127.0.0.1:`port` answers 200."""
    deadline = started + timeouts.scaled(harness.READY_TIMEOUT_S)
    while time.monotonic() < deadline:
        try:
            if netutil.proxy_get(netutil.LOOPBACK, port, url, 2.0).status == 200:
                return time.monotonic() - started
        except (OSError, http.client.HTTPException):
            pass  # not listening yet
        if not still_running():
            raise SystemExit("benchmark: the container exited before proxying")
        time.sleep(0.01)
    raise SystemExit(
        f"benchmark: no proxied 200 from port {port} within {harness.READY_TIMEOUT_S:g} s"
    )


def _made_cache(factory: harness.ContainerFactory, parent: Path) -> Path:
    """A cache dir that `squid -z` already initialised (the packaged config has a cache_dir),
    for the runs that compare starts without it: Squid alone cannot start on an empty one."""
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=parent))
    cache.chmod(0o777)  # the image's UID 1000 writes it
    options = RunOptions(
        name=factory.unique_name("squid-z"),
        mounts=(Mount(cache, "/var/spool/squid", read_only=False),),
        entrypoint="/usr/sbin/squid",
        command=("-N", "-z", "-f", harness.DEFAULT_CONFIG_PATH),
    )
    done = factory.runtime.run_once(factory.image, options, timeout=timeouts.scaled(120))
    if done.returncode != 0:
        raise SystemExit(f"benchmark: squid -z in the image failed: {done.stderr.strip()[-500:]}")
    return cache


Burst = Callable[[int], netutil.BurstResult]  # the same burst through the proxy on a port


def _squid_alone(
    factory: harness.ContainerFactory, url: str, cache: Path, burst: Burst
) -> tuple[float, float, netutil.BurstResult]:
    """(run -> first proxied 200, SIGINT -> exit, the burst through it) of Squid alone in the
    image, cache made: the throughput baseline with the same access logging (to stdout)."""
    proxy_port = netutil.free_port()
    name = factory.unique_name("squid-alone")
    options = RunOptions(
        name=name,
        publish=(PortMapping(netutil.LOOPBACK, proxy_port, harness.SQUID_CONTAINER_PORT),),
        mounts=(Mount(cache, "/var/spool/squid", read_only=False),),
        entrypoint="/usr/sbin/squid",
        command=("--foreground", "-d", "0", "-f", harness.DEFAULT_CONFIG_PATH),
        extra_args=("--stop-signal", "SIGINT"),
    )
    started = time.monotonic()
    factory.runtime.run_detached(factory.image, options)
    first = _first_proxied_200(
        proxy_port, url, started, lambda: factory.runtime.state(name).running
    )
    time.sleep(0.5)
    result = burst(proxy_port)
    stopped = time.monotonic()
    factory.runtime.stop(name, 30)
    return first, time.monotonic() - stopped, result


def _rss_kib(factory: harness.ContainerFactory, name: str) -> tuple[float, float]:
    """VmRSS of PID 1 and of the health server, read inside the container by its own Python."""
    code = (
        "import os\n"
        "def rss(pid):\n"
        "    for line in open(f'/proc/{pid}/status'):\n"
        "        if line.startswith('VmRSS:'): return int(line.split()[1])\n"
        "    return 0\n"
        "health = [p for p in os.listdir('/proc') if p.isdigit() and b'healthcheck' in open(f'/proc/{p}/cmdline','rb').read()]\n"
        "print(rss(1), rss(health[0]) if health else 0)\n"
    )
    done = factory.runtime.exec(name, [harness.PYTHON, "-c", code])
    if done.returncode != 0:
        return 0.0, 0.0
    pid1, health = done.stdout.split()
    return float(pid1), float(health)


def _stop_during_download(factory: harness.ContainerFactory, url: str) -> tuple[bool, float]:
    """(the 10 s download arrived complete, seconds from its end to the container's exit)."""
    proxy = factory.start("download")
    proxy.wait_ready()
    proxy.wait_for_log("Container ready")
    received: dict[str, float] = {}

    def download() -> None:
        connection = http.client.HTTPConnection(
            netutil.LOOPBACK, proxy.proxy_port, timeout=timeouts.scaled(60)
        )
        size = 0
        try:
            connection.request("GET", url)
            response = connection.getresponse()
            while chunk := response.read(65536):
                size += len(chunk)
        except (OSError, http.client.HTTPException):
            pass
        finally:
            received["size"], received["end"] = size, time.monotonic()
            connection.close()

    fetcher = threading.Thread(target=download, daemon=True)
    fetcher.start()
    time.sleep(1.0)
    proxy.stop(60)
    exited = time.monotonic()
    fetcher.join(timeouts.scaled(60))
    complete = received.get("size") == DOWNLOAD_SECONDS * 10 * 1024  # /slow: 1 KiB every 0.1 s
    return complete, exited - received.get("end", exited)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=5, help="fresh containers to measure (default 5)"
    )
    parser.add_argument("--image", help=f"image reference (default ${image_source.IMAGE_ENV})")
    parser.add_argument(
        "--tarball", help=f"image tar to load (default ${image_source.TARBALL_ENV})"
    )
    parser.add_argument("--requests", type=int, default=2000, help="burst size (default 2000)")
    parser.add_argument(
        "--connections", type=int, default=20, help="burst connections (default 20)"
    )
    options = parser.parse_args(argv)
    if options.runs < 1:
        parser.error("--runs must be at least 1")

    environ = dict(os.environ)
    if options.image:
        environ[image_source.IMAGE_ENV] = options.image
    elif options.tarball:
        environ.pop(image_source.IMAGE_ENV, None)
        environ[image_source.TARBALL_ENV] = options.tarball
    try:
        choice = image_source.choose_image(environ)
    except image_source.ImageSourceError as error:
        print(f"benchmark: {error}", file=sys.stderr)
        return 2
    if choice is None:
        print(f"benchmark: {image_source.NO_IMAGE_REASON}", file=sys.stderr)
        return 2
    conf_dir = tempfile.TemporaryDirectory(
        prefix="cephaloproxy-bench-"
    )  # podman conf, removed at exit
    detection = detect_runtime(conf_dir=Path(conf_dir.name))
    if detection.spec is None:
        print(f"benchmark: no usable container runtime: {detection.reason()}", file=sys.stderr)
        return 2
    runtime = ContainerRuntime(detection.spec)
    if choice.reference:
        image = choice.reference
    else:
        assert choice.tarball is not None, "choose_image gives a reference or a tarball"
        image = runtime.load(choice.tarball)[0]
    address = harness.host_address(runtime)
    if address is None:
        print(
            f"benchmark: cannot find the host address for containers; set {harness.HOST_ADDRESS_ENV}",
            file=sys.stderr,
        )
        return 2

    print(f"runtime: {'; '.join(detection.spec.notes)}")
    print(
        f"image:   {image}  size {runtime.image_size(image) / 1e6:.1f} MB (uncompressed, as the runtime reports)"
    )
    print(
        f"runs:    {options.runs}; burst {options.requests} requests over {options.connections} connections\n"
    )

    ready_s: list[float] = []
    first_200_s: list[float] = []
    restart_200_s: list[float] = []
    alone_first_200_s: list[float] = []
    alone_stop_s: list[float] = []
    rss_pid1_kib: list[float] = []
    rss_health_kib: list[float] = []
    download_complete: list[float] = []
    exit_after_download_s: list[float] = []
    baseline_s: list[float] = []
    stop_s: list[float] = []
    proxied_rps: list[float] = []
    direct_rps: list[float] = []
    alone_rps: list[float] = []
    factory = harness.ContainerFactory(runtime, image, label="bench")
    scratch_dir = tempfile.TemporaryDirectory(prefix="cephaloproxy-bench-caches-")
    scratch = Path(scratch_dir.name)
    try:
        with netutil.LocalServer(address, freebind=True) as server:
            for run in range(1, options.runs + 1):
                baseline_s.append(_runtime_start_baseline(factory))
                probe_url = server.url("/first", host=address)

                def burst(port: int) -> netutil.BurstResult:
                    return netutil.run_burst(
                        netutil.LOOPBACK, port,
                        url_for=lambda i: server.url(f"/b/{i}"), expected_body=lambda i: server.expected_body(f"/b/{i}"),
                        total=options.requests, connections=options.connections,
                    )  # fmt: skip

                alone_first, alone_stop, alone_burst = _squid_alone(
                    factory, probe_url, _made_cache(factory, scratch), burst
                )
                alone_first_200_s.append(alone_first)
                alone_stop_s.append(alone_stop)
                if alone_burst.error_count == 0:
                    alone_rps.append(alone_burst.requests_per_second)
                # The entrypoint on a made cache too (it then skips `squid -z`), as Squid alone.
                cache = _made_cache(factory, scratch)
                started = time.monotonic()
                again = factory.start(
                    f"restart{run}", mounts=(Mount(cache, "/var/spool/squid", read_only=False),)
                )
                restart_200_s.append(
                    _first_proxied_200(again.proxy_port, probe_url, started, again.is_running)
                )
                again.stop(30)
                started = time.monotonic()
                proxy = factory.start(f"run{run}")
                first_200_s.append(
                    _first_proxied_200(proxy.proxy_port, probe_url, started, proxy.is_running)
                )
                proxy.wait_ready()
                ready_s.append(time.monotonic() - started)
                # Stop only after the entrypoint said so: /ready can answer a moment earlier.
                proxy.wait_for_log("Container ready")
                pid1, health = _rss_kib(factory, proxy.name)
                rss_pid1_kib.append(pid1)
                rss_health_kib.append(health)

                proxied = burst(proxy.proxy_port)
                direct = netutil.run_burst(
                    address, server.port,
                    url_for=lambda i: f"/b/{i}", expected_body=lambda i: server.expected_body(f"/b/{i}"),
                    total=options.requests, connections=options.connections,
                )  # fmt: skip
                if proxied.error_count == 0:
                    proxied_rps.append(proxied.requests_per_second)
                direct_rps.append(direct.requests_per_second)

                stop_s.append(proxy.stop(30))
                exit_code = proxy.state().exit_code
                print(
                    f"run {run}: run->/ready {ready_s[-1]:6.2f} s (runtime baseline {baseline_s[-1]:5.2f} s)"
                    f"  stop->exit {stop_s[-1]:5.2f} s (exit {exit_code})"
                    f"  proxied {proxied.requests_per_second:7.0f} req/s ({proxied.error_count} errors)"
                    f"  direct {direct.requests_per_second:7.0f} req/s"
                )
                complete, after_end = _stop_during_download(
                    factory, server.url(f"/slow?seconds={DOWNLOAD_SECONDS}&run={run}", host=address)
                )
                download_complete.append(float(complete))
                if complete:
                    exit_after_download_s.append(after_end)
                print(
                    f"run {run}: squid alone first 200 {alone_first:5.2f} s, SIGINT->exit {alone_stop:5.2f} s;"
                    f" entrypoint first 200 {first_200_s[-1]:5.2f} s; 10 s download {'complete' if complete else 'CUT'},"
                    f" exit {after_end:5.2f} s after its end"
                )
                factory.cleanup()
    finally:
        factory.cleanup()
        scratch_dir.cleanup()

    print()
    print(_spread("run -> first proxied 200 (first start)", "s", first_200_s))
    print(_spread("run -> first proxied 200 (cache made)", "s", restart_200_s))
    print(_spread("squid alone: run -> first 200 (cache made)", "s", alone_first_200_s))
    print(_spread("run -> /ready 200", "s", ready_s))
    print(_spread("runtime baseline (python3 -c pass)", "s", baseline_s))
    print(_spread("stop -> exit, idle", "s", stop_s))
    print(_spread("squid alone: stop (SIGINT) -> exit", "s", alone_stop_s))
    print(_spread("10 s download complete (1 = yes)", "", download_complete))
    print(_spread("exit after the download's end", "s", exit_after_download_s))
    print(_spread("RSS PID 1", "KiB", rss_pid1_kib))
    print(_spread("RSS health server", "KiB", rss_health_kib))
    print(_spread("proxied burst", "req/s", proxied_rps))
    print(_spread("squid alone: burst", "req/s", alone_rps))
    print(_spread("direct burst (no proxy)", "req/s", direct_rps))
    if first_200_s and alone_first_200_s:
        for label, values in (("first start", first_200_s), ("cache made", restart_200_s)):
            ratio = statistics.median(values) / statistics.median(alone_first_200_s)
            print(
                f"{'start / squid alone, ' + label:<34} {ratio:.2f}x (medians, n={len(values)}; goal <= 1.5)"
            )
        added = [
            ours - alone for ours, alone in zip(restart_200_s, alone_first_200_s, strict=False)
        ]
        print(_spread("start added to squid alone (cache made)", "s", added) + "  (goal <= 0.10 s)")
    if stop_s and alone_stop_s:
        ratio = statistics.median(stop_s) / statistics.median(alone_stop_s)
        print(
            f"{'idle stop / squid alone SIGINT':<34} {ratio:.2f}x (medians, n={len(stop_s)}; goal: stop <= 1.5 s)"
        )
    if ready_s and baseline_s:
        print(
            f"{'startup / runtime baseline':<34} {statistics.median(ready_s) / statistics.median(baseline_s):.2f}x (medians)"
        )
    if proxied_rps and alone_rps:
        print(
            f"{'throughput / squid alone':<34} {statistics.median(proxied_rps) / statistics.median(alone_rps):.2f}x (medians, n={len(proxied_rps)}; goal >= 0.97)"
        )
    if proxied_rps and direct_rps:
        print(
            f"{'proxied / direct throughput':<34} {statistics.median(proxied_rps) / statistics.median(direct_rps):.2f}x (medians)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
