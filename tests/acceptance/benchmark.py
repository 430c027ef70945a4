"""Benchmarks for the image (printed, never asserted): startup, stop, size, proxy throughput.

    python3 tests/acceptance/benchmark.py --runs 5 [--image REF | --tarball PATH]
    bazel run //tests/acceptance:benchmark -- --runs 5

Each run starts a fresh container. Baselines are measured in the same run so the numbers
read as ratios on whatever machine this is: the runtime's own start cost (a container
running `python3 -c pass`) for the startup time, and the same burst sent straight to
the server for the proxied throughput.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from tests.support import harness, image_source, netutil  # noqa: E402
from tests.support.runtime import ContainerRuntime, RunOptions, detect_runtime  # noqa: E402


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
        factory.image, RunOptions(name=factory.unique_name("baseline"), entrypoint=harness.PYTHON, command=("-c", "pass"))
    )
    if done.returncode != 0:
        raise SystemExit(f"baseline container failed: {done.stderr.strip()}")
    return time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh containers to measure (default 5)")
    parser.add_argument("--image", help=f"image reference (default ${image_source.IMAGE_ENV})")
    parser.add_argument("--tarball", help=f"image tar to load (default ${image_source.TARBALL_ENV})")
    parser.add_argument("--requests", type=int, default=2000, help="burst size (default 2000)")
    parser.add_argument("--connections", type=int, default=20, help="burst connections (default 20)")
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
    conf_dir = tempfile.TemporaryDirectory(prefix="cephaloproxy-bench-")  # podman conf, removed at exit
    detection = detect_runtime(conf_dir=Path(conf_dir.name))
    if detection.spec is None:
        print(f"benchmark: no usable container runtime: {detection.reason()}", file=sys.stderr)
        return 2
    runtime = ContainerRuntime(detection.spec)
    image = choice.reference or runtime.load(choice.tarball)[0]  # type: ignore[arg-type]
    address = harness.host_address(runtime)
    if address is None:
        print(f"benchmark: cannot find the host address for containers; set {harness.HOST_ADDRESS_ENV}", file=sys.stderr)
        return 2

    print(f"runtime: {'; '.join(detection.spec.notes)}")
    print(f"image:   {image}  size {runtime.image_size(image) / 1e6:.1f} MB (uncompressed, as the runtime reports)")
    print(f"runs:    {options.runs}; burst {options.requests} requests over {options.connections} connections\n")

    ready_s: list[float] = []
    baseline_s: list[float] = []
    stop_s: list[float] = []
    proxied_rps: list[float] = []
    direct_rps: list[float] = []
    factory = harness.ContainerFactory(runtime, image, label="bench")
    try:
        with netutil.LocalServer(address, freebind=True) as server:
            for run in range(1, options.runs + 1):
                baseline_s.append(_runtime_start_baseline(factory))
                started = time.monotonic()
                proxy = factory.start(f"run{run}")
                proxy.wait_ready()
                ready_s.append(time.monotonic() - started)

                burst = netutil.run_burst(
                    netutil.LOOPBACK, proxy.proxy_port,
                    url_for=lambda i: server.url(f"/b/{i}"), expected_body=lambda i: server.expected_body(f"/b/{i}"),
                    total=options.requests, connections=options.connections,
                )  # fmt: skip
                direct = netutil.run_burst(
                    address, server.port,
                    url_for=lambda i: f"/b/{i}", expected_body=lambda i: server.expected_body(f"/b/{i}"),
                    total=options.requests, connections=options.connections,
                )  # fmt: skip
                if burst.error_count == 0:
                    proxied_rps.append(burst.requests_per_second)
                direct_rps.append(direct.requests_per_second)

                stop_s.append(proxy.stop(30))
                exit_code = proxy.state().exit_code
                print(
                    f"run {run}: run->/ready {ready_s[-1]:6.2f} s (runtime baseline {baseline_s[-1]:5.2f} s)"
                    f"  stop->exit {stop_s[-1]:5.2f} s (exit {exit_code})"
                    f"  proxied {burst.requests_per_second:7.0f} req/s ({burst.error_count} errors)"
                    f"  direct {direct.requests_per_second:7.0f} req/s"
                )
                factory.cleanup()
    finally:
        factory.cleanup()

    print()
    print(_spread("run -> /ready 200", "s", ready_s))
    print(_spread("runtime baseline (python3 -c pass)", "s", baseline_s))
    print(_spread("stop -> exit", "s", stop_s))
    print(_spread("proxied burst", "req/s", proxied_rps))
    print(_spread("direct burst (no proxy)", "req/s", direct_rps))
    if ready_s and baseline_s:
        print(f"{'startup / runtime baseline':<34} {statistics.median(ready_s) / statistics.median(baseline_s):.2f}x (medians)")
    if proxied_rps and direct_rps:
        print(f"{'proxied / direct throughput':<34} {statistics.median(proxied_rps) / statistics.median(direct_rps):.2f}x (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
