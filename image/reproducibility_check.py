#!/usr/bin/env python3
"""Builds //image:image twice from fresh, empty output bases and compares digests.

    python3 image/reproducibility_check.py                      # bazel / bazelisk on PATH
    python3 image/reproducibility_check.py --bazel tools/debian-bazel/run

Each build gets its own new --output_base and runs with --disk_cache= and
--remote_cache= (unless --allow-cache), so every action really runs twice;
downloads may come from the shared repository cache, which is keyed by sha256. Exit 0 and "reproducible" when the two image digests (and every
layer digest) are equal; exit 1 naming the layers that differ otherwise.
Run it from the repository root. It takes two full image builds.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET = "//image:image"


def build_digests(bazel: list[str], output_base: Path, extra: list[str]) -> tuple[str, list[str]]:
    """Builds into output_base and returns (manifest digest, layer digests)."""
    command = bazel + [f"--output_base={output_base}", "build", TARGET, *extra]
    print("+", shlex.join(command), flush=True)
    subprocess.run(command, check=True)
    # bazel-bin points into this build's output base.
    layout = Path("bazel-bin/image/image").resolve()
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    algorithm, _, hex_digest = digest.partition(":")
    manifest = json.loads((layout / "blobs" / algorithm / hex_digest).read_text())
    return digest, [layer["digest"] for layer in manifest["layers"]]


def remove_tree(path: Path) -> None:
    """Bazel leaves read-only directories behind; make them writable first."""

    def make_writable_and_retry(function, failed_path, _info) -> None:  # type: ignore[no-untyped-def]
        Path(failed_path).parent.chmod(0o755)
        function(failed_path)

    if path.exists():
        shutil.rmtree(path, onerror=make_writable_and_retry)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bazel", default="bazel", help="command that runs Bazel (split like a shell would)"
    )
    parser.add_argument(
        "--output-base-root",
        type=Path,
        default=None,
        help="directory for the two output bases (default: a new temporary directory)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the output bases afterwards")
    parser.add_argument(
        "--allow-cache",
        action="store_true",
        help="keep the configured disk/remote caches (faster, but cached actions prove nothing)",
    )
    parser.add_argument("build_args", nargs="*", help="extra `bazel build` arguments (after --)")
    args = parser.parse_args(argv)
    if not Path("MODULE.bazel").is_file():
        print(
            "reproducibility_check: run from the repository root (no MODULE.bazel here)",
            file=sys.stderr,
        )
        return 2
    root = args.output_base_root or Path(tempfile.mkdtemp(prefix="cephaloproxy-repro-"))
    root = root.resolve()
    bases = [root / "first", root / "second"]
    for base in bases:
        if base.exists():
            print(
                f"reproducibility_check: {base} exists; give an empty --output-base-root",
                file=sys.stderr,
            )
            return 2
    if shutil.which(shlex.split(args.bazel)[0]) is None:
        print(
            f"reproducibility_check: {args.bazel!r} is not on PATH: install bazelisk as `bazel` "
            "(https://github.com/bazelbuild/bazelisk), or pass --bazel tools/debian-bazel/run (offline)",
            file=sys.stderr,
        )
        return 2
    bazel = shlex.split(args.bazel)
    build_args = (
        list(args.build_args)
        if args.allow_cache
        else ["--disk_cache=", "--remote_cache=", *args.build_args]
    )
    try:
        first = build_digests(bazel, bases[0], build_args)
        second = build_digests(bazel, bases[1], build_args)
    except subprocess.CalledProcessError as error:
        print(f"reproducibility_check: build failed ({error.returncode})", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            for base in bases:
                subprocess.run(
                    bazel + [f"--output_base={base}", "shutdown"],
                    check=False,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                remove_tree(base)
    print(f"first build:  {first[0]}")
    print(f"second build: {second[0]}")
    if first == second:
        print(f"reproducible: {len(first[1])} layers, image digest {first[0]}")
        return 0
    for index, (a, b) in enumerate(zip(first[1], second[1])):
        if a != b:
            print(f"layer {index} differs: {a} vs {b}", file=sys.stderr)
    print("NOT reproducible", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
