"""Benchmark session (not a test): every PID 1 benchmark in turn, one after the other, into one record.

    python3 entrypoint/benchmark_all.py --output docs/benchmarks/DATE.txt [--quick]

The performance table in docs/developing.md is read from such a record: it names the commit,
the machine (CPUs, kernel, load average before and after each benchmark) and every command
with its arguments, so each number there points at the run that printed it. The benchmarks
run in sequence, never side by side (each measures against a baseline in its own run, and a
neighbour's load would move one side only). `--quick` runs fewer rounds: for a smoke check of
the record, not for the table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL: list[tuple[str, list[str]]] = [
    ("benchmark_startup.py", ["--runs", "5", "--phases", "3"]),
    ("benchmark_health.py", ["--probes", "200"]),
    ("benchmark_throughput.py", ["--rounds", "3", "--seconds", "10"]),
    ("benchmark_sockets.py", ["--rows", "0", "5000", "20000", "--rounds", "3"]),
    ("benchmark_metrics.py", ["--scrapes", "8"]),
]
QUICK: list[tuple[str, list[str]]] = [
    ("benchmark_startup.py", ["--runs", "1"]),
    ("benchmark_health.py", ["--probes", "20", "--idle", "100", "--dribblers", "4"]),
    ("benchmark_throughput.py", ["--rounds", "1", "--seconds", "2", "--connections", "20"]),
    ("benchmark_sockets.py", ["--rows", "0", "1000", "--rounds", "1"]),
    ("benchmark_metrics.py", ["--scrapes", "2", "--interval", "3"]),
]


def commit() -> str:
    """The checkout's HEAD, read from .git itself: the benchmark environment may have no git."""
    git = HERE.parent / ".git"
    if git.is_file():  # a worktree: "gitdir: PATH"
        git = Path(git.read_text().split(":", 1)[1].strip())
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            common = (
                Path((git / "commondir").read_text().strip())
                if (git / "commondir").exists()
                else Path(".")
            )
            for base in (git, git / common):
                if (base / ref).exists():
                    return (base / ref).read_text().strip()[:12]
            for base in (git, git / common):
                packed = base / "packed-refs"
                if packed.exists():
                    for line in packed.read_text().splitlines():
                        if line.endswith(" " + ref):
                            return line.split()[0][:12]
            return f"unknown ({ref} not found)"
        return head[:12]
    except OSError as error:
        return f"unknown ({error.strerror})"


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()},"
        f" Python {platform.python_version()}"
    )


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run_one(script: str, args: list[str], record: list[str]) -> int:
    def note(text: str) -> None:
        record.append(text)
        print(text, end="", flush=True)

    command = [sys.executable, str(HERE / script), *args]
    note(
        f"\n## {' '.join(['python3', f'entrypoint/{script}', *args])}\nload average before: {load()}\n"
    )
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    note(done.stdout)
    if done.returncode != 0:
        note(f"[exit {done.returncode}] stderr:\n{done.stderr[-4000:]}\n")
    note(f"load average after: {load()}; {time.monotonic() - started:.0f} s\n")
    return done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, required=True, help="where the record is written")
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke check")
    args = parser.parse_args()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    record = [f"# Benchmark session {now}\ncommit {commit()}; {machine()}\n"]
    print(record[0], end="", flush=True)
    failed = [
        script
        for script, script_args in (QUICK if args.quick else FULL)
        if run_one(script, script_args, record) != 0
    ]
    record.append(f"\nfailed: {', '.join(failed)}\n" if failed else "\nall benchmarks ran\n")
    print(record[-1], end="")
    partial = args.output.with_name(args.output.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text("".join(record))
    partial.replace(args.output)  # never a half-written record under the final name
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
