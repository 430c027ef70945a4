"""Generates both SBOM formats from this checkout's real inputs, for the validators outside Bazel.

The lock (image/trixie.lock.json, every arch it pins), squid/version.bzl and
squid/configure_flags.bzl are read as the Bazel rule reads them; the Python version is this
interpreter's, a stand-in for the toolchain's, which only the Bazel rule knows.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def starlark_constants(path: Path) -> dict[str, object]:
    """Upper-case constants of a .bzl file. version.bzl and configure_flags.bzl
    are plain assignments of strings, lists, str.format() and %, which Python
    evaluates exactly as Starlark does; anything else is refused."""
    namespace: dict[str, object] = {"__builtins__": {}}
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    return {k: v for k, v in namespace.items() if k.isupper()}


def checkout_facts(python_version: str) -> dict[str, object]:
    version = starlark_constants(REPO / "squid" / "version.bzl")
    flags = starlark_constants(REPO / "squid" / "configure_flags.bzl")
    return {
        "project": {
            "name": "cephaloproxy",
            "source_url": "",
            "license": "GPL-2.0-or-later",
            "supplier": "CephaloProxy",
        },
        "squid": {
            "version": version["SQUID_VERSION"],
            "sha256": version["SQUID_SHA256"],
            "urls": version["SQUID_URLS"],
            "cpe": version["SQUID_CPE"],
            "purl": version["SQUID_PURL"],
            "configure_flags": flags["SQUID_CONFIGURE_FLAGS"],
            "make_args": flags["SQUID_MAKE_ARGS"],
        },
        "python": {"version_info": python_version, "interpreter": "/usr/bin/python3"},
    }


def generate_from_checkout(
    directory: Path, generator: Callable[[list[str]], int], suffix: str
) -> list[Path]:
    """One SBOM per architecture of the lock, written by `generator` (a writer's main) as *{suffix}."""
    lock = REPO / "image" / "trixie.lock.json"
    archs = sorted({p["arch"] for p in json.loads(lock.read_text())["packages"]})
    facts = directory / "facts.json"
    facts.write_text(json.dumps(checkout_facts(platform.python_version())))
    outputs = []
    for arch in archs:
        output = directory / f"cephaloproxy-{arch}{suffix}"
        if (
            generator(
                [
                    "--lock",
                    str(lock),
                    "--arch",
                    arch,
                    "--facts",
                    str(facts),
                    "--output",
                    str(output),
                ]
            )
            != 0
        ):
            raise SystemExit(1)
        outputs.append(output)
    return outputs


def validate_all(
    argv: list[str],
    validate: Callable[[Path], list[str]],
    generator: Callable[[list[str]], int],
    suffix: str,
) -> int:
    """A validator's command line: the given files, else this checkout's SBOMs; 1 on any message."""
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        files = [Path(a) for a in argv] or generate_from_checkout(Path(scratch), generator, suffix)
        for path in files:
            messages = validate(path)
            for message in messages:
                print(f"{path}: {message}", file=sys.stderr)
            failed = failed or bool(messages)
    return 1 if failed else 0
