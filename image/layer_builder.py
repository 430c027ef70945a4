"""Writes one reproducible OCI layer (a gzipped tar) from a JSON spec.

Used by the `image_layer`, `python_runtime_layer` and `gzip_layer` rules in
image/layer.bzl (`--gzip IN OUT` only compresses an existing tar layer).
Every entry gets a fixed owner, mode and mtime, entries are sorted and parent
directories are added, so the same inputs always give the same bytes: the image
digest must not depend on the build machine, its umask or the time of day.

Spec (written by the rules, never by hand):
  {"mtime": 0,
   "entries": [
     {"type": "file", "path": "usr/bin/x", "src": "bazel-out/...", "mode": "auto",
      "uid": 0, "gid": 0},
     {"type": "dir", "path": "var/log/squid", "mode": "0770", "uid": 1000, "gid": 0},
     {"type": "symlink", "path": "usr/bin/python3", "target": "python3.13"}]}
"auto" file modes are 0755 when the source has any execute bit, else 0644.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import stat
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DEFAULT_DIR_MODE = 0o755


class SpecError(Exception):
    """The spec asks for something impossible; the message says what to fix."""


@dataclass(frozen=True)
class Entry:
    """One member of the layer, with its path relative to the image root."""

    kind: str
    path: str
    mode: int
    uid: int
    gid: int
    src: str | None = None
    target: str | None = None


def normalize_path(raw: str) -> str:
    """Image paths are relative to /, without '.' or '..' segments."""
    path = PurePosixPath("/" + raw.lstrip("/"))
    if ".." in path.parts:
        raise SpecError(f"layer path {raw!r} contains '..'; give a path inside the image")
    relative = str(path)[1:]
    if not relative:
        raise SpecError("layer path '/' cannot be an entry; give a path below the root")
    return relative


def file_mode(raw_mode: str, src: str) -> int:
    """Resolves "auto" against the source file's execute bits."""
    if raw_mode != "auto":
        return int(raw_mode, 8)
    executable = os.stat(src).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return 0o755 if executable else 0o644


def parse_entries(spec: dict[str, object]) -> list[Entry]:
    """Turns the JSON spec into entries; duplicates must agree exactly."""
    by_path: dict[str, Entry] = {}
    raw_entries = spec.get("entries", [])
    if not isinstance(raw_entries, list):
        raise SpecError("spec 'entries' must be a list")
    for raw in raw_entries:
        kind = raw["type"]
        path = normalize_path(raw["path"])
        uid = int(raw.get("uid", 0))
        gid = int(raw.get("gid", 0))
        if kind == "file":
            src = raw["src"]
            if not os.path.isfile(src):
                raise SpecError(f"source {src!r} for /{path} is not a file")
            entry = Entry("file", path, file_mode(raw.get("mode", "auto"), src), uid, gid, src=src)
        elif kind == "dir":
            entry = Entry("dir", path, int(raw.get("mode", "0755"), 8), uid, gid)
        elif kind == "symlink":
            entry = Entry("symlink", path, 0o777, uid, gid, target=raw["target"])
        else:
            raise SpecError(f"unknown entry type {kind!r} for /{path}; use file, dir or symlink")
        previous = by_path.get(path)
        if previous is not None and previous != entry:
            raise SpecError(f"/{path} is given twice with different contents: {previous} and {entry}")
        by_path[path] = entry
    add_missing_parents(by_path)
    return [by_path[path] for path in sorted(by_path)]


def add_missing_parents(by_path: dict[str, Entry]) -> None:
    """Container runtimes need every parent directory to exist in some layer."""
    for path in list(by_path):
        for parent in PurePosixPath(path).parents:
            name = str(parent)
            if name == ".":
                continue
            existing = by_path.get(name)
            if existing is None:
                by_path[name] = Entry("dir", name, DEFAULT_DIR_MODE, 0, 0)
            elif existing.kind != "dir":
                raise SpecError(f"/{name} is a {existing.kind} but /{path} needs it to be a directory")


def tar_info(entry: Entry, mtime: int) -> tarfile.TarInfo:
    """Header with fixed owner names so the bytes do not depend on the build host."""
    info = tarfile.TarInfo(entry.path + ("/" if entry.kind == "dir" else ""))
    info.mode = entry.mode
    info.uid = entry.uid
    info.gid = entry.gid
    info.uname = ""
    info.gname = ""
    info.mtime = mtime
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target or ""
    else:
        info.type = tarfile.REGTYPE
        info.size = os.stat(entry.src or "").st_size
    return info


def write_layer(entries: list[Entry], mtime: int, output: Path) -> None:
    """Writes the tar into gzip with a zero header timestamp and no file name."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info = tar_info(entry, mtime)
            if entry.kind == "file":
                with open(entry.src or "", "rb") as source:
                    archive.addfile(info, source)
            else:
                archive.addfile(info)
    temporary = output.with_name(output.name + ".partial")
    with open(temporary, "wb") as sink:
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6) as zipped:
            zipped.write(raw.getvalue())
    temporary.replace(output)


def gzip_layer(source: Path, output: Path) -> None:
    """Compresses a plain tar layer the same way; a gzipped one is copied as is."""
    data = source.read_bytes()
    temporary = output.with_name(output.name + ".partial")
    if data[:2] == b"\x1f\x8b":
        temporary.write_bytes(data)
    else:
        with open(temporary, "wb") as sink:
            with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6) as zipped:
                zipped.write(data)
    temporary.replace(output)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--gzip"]:
        if len(argv) != 3:
            print("usage: layer_builder --gzip LAYER.tar OUTPUT.tar.gz", file=sys.stderr)
            return 2
        try:
            gzip_layer(Path(argv[1]), Path(argv[2]))
        except OSError as error:
            print(f"layer_builder: {error}", file=sys.stderr)
            return 1
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="JSON spec written by image/layer.bzl")
    parser.add_argument("output", type=Path, help="layer .tar.gz to write")
    args = parser.parse_args(argv)
    try:
        spec = json.loads(args.spec.read_text(encoding="utf-8"))
        entries = parse_entries(spec)
        write_layer(entries, int(spec.get("mtime", 0)), args.output)
    except (SpecError, KeyError, ValueError, OSError) as error:
        print(f"layer_builder: {args.spec}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
