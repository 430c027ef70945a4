"""Prints cold and cached build times of Squid (//squid:layer by default).

Three builds of the same target, each timed from the outside:
  cold    `bazel clean`, then build with an empty disk cache: every action runs
          (configure + the full make of Squid).
  cached  `bazel clean` again, then build with the disk cache the cold build
          filled: what a fresh checkout or CI machine with a shared cache sees.
  no-op   build again without cleaning: Bazel's own action cache.
The ratios are against the cold build measured in the same run.

Usage (from the repository root; takes as long as a full Squid compile):
  python3 squid/build_benchmark.py                      # plain `bazel`
  python3 squid/build_benchmark.py --bazel tools/debian-bazel/run   # any wrapper
  python3 squid/build_benchmark.py --phases cached,no-op --disk-cache DIR
It runs `bazel clean` on the workspace it is started in.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PHASES = ("cold", "cached", "no-op")


@dataclass(frozen=True)
class Timing:
    phase: str
    seconds: float


def run(command: list[str], log: Path) -> float:
    """Runs command, appending its output to log; returns wall seconds."""
    start = time.monotonic()
    with log.open("a") as sink:
        sink.write(f"\n$ {shlex.join(command)}\n")
        sink.flush()
        result = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(
            f"build_benchmark: `{shlex.join(command)}` failed ({result.returncode}); see {log}"
        )
    return elapsed


def measure(
    bazel: list[str], target: str, phases: list[str], disk_cache: Path, log: Path
) -> list[Timing]:
    cache_flag = f"--disk_cache={disk_cache}"
    timings: list[Timing] = []
    for phase in phases:
        if phase in ("cold", "cached"):
            run([*bazel, "clean"], log)
        seconds = run([*bazel, "build", cache_flag, target], log)
        timings.append(Timing(phase, seconds))
        print(f"{phase:>7}: {seconds:8.1f} s", flush=True)
    return timings


def report(timings: list[Timing]) -> str:
    baseline = next((t.seconds for t in timings if t.phase == "cold"), None)
    lines = ["phase    seconds  vs cold"]
    for timing in timings:
        ratio = f"{timing.seconds / baseline:7.3f}" if baseline else "      -"
        lines.append(f"{timing.phase:<7} {timing.seconds:8.1f}  {ratio}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bazel", default="bazel", help="Bazel command or wrapper (split like a shell)"
    )
    parser.add_argument("--target", default="//squid:layer")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated subset of {PHASES}"
    )
    parser.add_argument(
        "--disk-cache",
        type=Path,
        help="disk cache dir (default: a new empty one; 'cold' needs it empty)",
    )
    parser.add_argument(
        "--log", type=Path, default=Path(tempfile.gettempdir()) / "squid-build-benchmark.log"
    )
    args = parser.parse_args(argv)

    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {unknown}; choose from {PHASES}")
    disk_cache = args.disk_cache or Path(tempfile.mkdtemp(prefix="squid-benchmark-cache-"))
    if "cold" in phases and disk_cache.exists() and any(disk_cache.iterdir()):
        parser.error(f"--disk-cache {disk_cache} is not empty; a cold build needs an empty one")

    if shutil.which(shlex.split(args.bazel)[0]) is None:
        print(
            f"build_benchmark: {args.bazel!r} is not on PATH: install bazelisk as `bazel` "
            "(https://github.com/bazelbuild/bazelisk), or pass --bazel tools/debian-bazel/run (offline)",
            file=sys.stderr,
        )
        return 2
    print(f"target {args.target}, disk cache {disk_cache}, log {args.log}", flush=True)
    timings = measure(shlex.split(args.bazel), args.target, phases, disk_cache, args.log)
    print(report(timings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
