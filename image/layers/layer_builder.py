"""Writes one reproducible OCI layer (a gzipped tar) from a JSON spec.

Used by the `image_layer`, `python_runtime_layer` and `gzip_layer` rules in
image/layer.bzl. `--gzip IN OUT` only compresses an existing tar layer;
`--filter RULES IN OUT` also drops the members that RULES (path_rules filter
lines, one per line) drop. Every entry gets a fixed owner, mode and mtime,
entries are sorted and parent directories are added, so the same inputs always
give the same bytes: the image digest must not depend on the build machine, its
umask or the time of day.

Spec (written by the rules, never by hand):
  {"mtime": 0,
   "exclude_rules": "image/layers/python_runtime.exclude",  # optional filter file
   "exclude_prefix": "usr",                # its globs are relative to this dir
   "link_duplicates": true,                # optional, see link_duplicates()
   "bytecode": {"cache_tag": "cpython-313",  # optional, see add_bytecode()
                "under": ["usr/lib/python3.13"]},
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
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from image.layers import path_rules

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
    data: bytes | None = None  # generated content (bytecode), instead of src


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


def exclude_rules(rules_file: str, prefix: str) -> list[path_rules.Rule]:
    """The filter rules of rules_file, their globs moved below prefix."""
    if not rules_file:
        return []
    try:
        lines = Path(rules_file).read_text(encoding="utf-8").splitlines()
        rules = path_rules.parse_filter(lines)
    except (OSError, path_rules.RuleError) as error:
        raise SpecError(f"exclude rules {rules_file}: {error}") from error
    base = path_rules.relative(prefix)
    if not base:
        return rules
    return [
        path_rules.Rule(
            glob=f"{base}/{path_rules.relative(r.glob)}", verdict=r.verdict, line=r.line
        )
        for r in rules
    ]


def parse_entries(spec: dict[str, object]) -> list[Entry]:
    """Turns the JSON spec into entries; duplicates must agree exactly."""
    by_path: dict[str, Entry] = {}
    raw_entries = spec.get("entries", [])
    if not isinstance(raw_entries, list):
        raise SpecError("spec 'entries' must be a list")
    rules = exclude_rules(
        str(spec.get("exclude_rules") or ""), str(spec.get("exclude_prefix") or "")
    )
    for raw in raw_entries:
        kind = raw["type"]
        path = normalize_path(raw["path"])
        if path_rules.dropped(rules, path):
            continue
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
            raise SpecError(
                f"/{path} is given twice with different contents: {previous} and {entry}"
            )
        by_path[path] = entry
    bytecode = spec.get("bytecode")
    if bytecode:
        if not isinstance(bytecode, dict):
            raise SpecError("spec 'bytecode' must be an object with 'cache_tag' and 'under'")
        add_bytecode(
            by_path,
            str(bytecode["cache_tag"]),
            [normalize_path(p) for p in bytecode.get("under", [])],
        )
    if spec.get("link_duplicates"):
        link_duplicates(by_path)
    add_missing_parents(by_path)
    return [by_path[path] for path in sorted(by_path)]


def add_bytecode(by_path: dict[str, Entry], cache_tag: str, under: list[str]) -> None:
    """Adds DIR/__pycache__/NAME.<cache_tag>.pyc for every .py file below `under`.

    The image runs with PYTHONDONTWRITEBYTECODE and a read-only root, so without these every
    start compiles each module it imports again (measured: importing the entrypoint took
    1.0 s instead of 0.2 s on the 2-core CI machine). Unchecked-hash pycs (PEP 552) carry no
    timestamp, so they are reproducible and valid whatever mtime the layer gives the sources;
    the image is immutable, so the source need not be re-hashed at import. The code objects
    name the image path, as tracebacks should. Bytecode is specific to the Python minor
    version, not to the CPU, so this builder's interpreter must be the image's version.
    """
    own_tag = sys.implementation.cache_tag
    if own_tag != cache_tag:
        raise SpecError(
            f"bytecode for {cache_tag} asked for, but the layer builder runs {own_tag}: the image's"
            " Python would ignore it; build with the same Python minor version for the build tools"
            " and the image (one python.toolchain version in MODULE.bazel)"
        )
    prefixes = [prefix.rstrip("/") + "/" for prefix in under]
    sources = [
        entry
        for path, entry in sorted(by_path.items())
        if entry.kind == "file"
        and path.endswith(".py")
        and any(path.startswith(p) for p in prefixes)
    ]
    for entry, data in zip(
        sources, compile_bytecode([(entry.src or "", "/" + entry.path) for entry in sources])
    ):
        if data is None:
            continue  # not Python 3 source (test fixtures with bad syntax): nothing to cache
        module = PurePosixPath(entry.path)
        cached = str(module.parent / "__pycache__" / f"{module.stem}.{cache_tag}.pyc")
        by_path[cached] = Entry("file", cached, 0o644, entry.uid, entry.gid, data=data)


# Runs in the child of compile_bytecode(): builtins and already-loaded modules only, so it
# imports nothing that a cache could supply. Reads NUL-separated fields from stdin: the
# output directory, then (source, image path) pairs; writes N.pyc for the Nth pair that
# compiles (what py_compile writes with UNCHECKED_HASH, at optimization level 0).
_COMPILER = """
import sys, _imp, _frozen_importlib_external as external
fields = sys.stdin.buffer.read().split(b"\\0")
out = fields[0]
for number in range((len(fields) - 1) // 2):
    source, dfile = fields[1 + 2 * number], fields[2 + 2 * number].decode("utf-8", "surrogateescape")
    with open(source, "rb") as handle:
        data = handle.read()
    try:
        code = compile(data, dfile, "exec", dont_inherit=True, optimize=0)
    except Exception:
        continue
    pyc = external._code_to_hash_pyc(code, _imp.source_hash(external._RAW_MAGIC_NUMBER, data), False)
    with open(out + b"/%d.pyc" % number, "wb") as handle:
        handle.write(pyc)
"""


def compile_bytecode(sources: list[tuple[str, str]]) -> list[bytes | None]:
    """Unchecked-hash .pyc bytes for each (source file, image path); None where not Python.

    A module's .pyc depends on the state of the process that compiles it: marshal marks
    objects by refcount and interning (FLAG_REF, interned strings), and those depend on where
    that process had loaded its own modules from. Compiling functools.py in a builder that had
    loaded functools from a warm rules_python pycache (not an action input) gave other bytes
    than with that cache empty (issue 28). So one fresh interpreter compiles every file,
    importing nothing: no site (-S -s), no script dir on sys.path (-P), an empty private
    pycache prefix and no writes (-B), so its few startup modules come from the interpreter
    itself; the environment is only a fixed locale and hash seed (no -I: it would ignore
    PYTHONHASHSEED), nothing from the host.
    """
    if not sources:
        return []
    if not sys.executable:
        raise SpecError(
            "bytecode asked for, but the layer builder cannot find its own interpreter (sys.executable)"
        )
    with tempfile.TemporaryDirectory(prefix="layer-bytecode-") as scratch:
        empty_cache = os.path.join(scratch, "pycache")
        os.mkdir(empty_cache)
        fields = [os.fsencode(scratch)]
        for src, dfile in sources:
            fields += [os.fsencode(src), dfile.encode("utf-8", "surrogateescape")]
        done = subprocess.run(
            [
                sys.executable,
                "-S",
                "-s",
                "-P",
                "-B",
                "-X",
                f"pycache_prefix={empty_cache}",
                "-c",
                _COMPILER,
            ],
            input=b"\0".join(fields),
            capture_output=True,
            check=False,
            env={"LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"},
        )
        if done.returncode != 0:
            error = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise SpecError(
                f"compiling bytecode failed: {error[-1] if error else f'exit {done.returncode}'}"
            )
        results: list[bytes | None] = []
        for number in range(len(sources)):
            output = Path(scratch, f"{number}.pyc")
            results.append(output.read_bytes() if output.exists() else None)
        return results


def _digest(src: str) -> str:
    with open(src, "rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


def link_duplicates(by_path: dict[str, Entry]) -> None:
    """Identical files in one directory become one file and relative symlinks.

    Bazel hands a toolchain's symlinks (bin/python3 -> python3.13) to rules as
    plain files, so without this the layer would hold two full interpreters.
    The longest name is kept as the file (python3.13, libpython3.13.so.1.0):
    that is the versioned, real name that scanners and the loader look for.
    """
    # Same directory and size first, so only real candidates are hashed.
    groups: dict[tuple[str, int], list[str]] = {}
    for path, entry in by_path.items():
        if entry.kind == "file" and entry.src is not None and entry.data is None:
            size = os.stat(entry.src).st_size
            if size:  # empty files (py.typed, __init__.py) are not copies of each other
                groups.setdefault((str(PurePosixPath(path).parent), size), []).append(path)
    for _, paths in sorted(groups.items()):
        if len(paths) < 2:
            continue
        by_digest: dict[str, list[str]] = {}
        for path in paths:
            by_digest.setdefault(_digest(by_path[path].src or ""), []).append(path)
        for same in by_digest.values():
            if len(same) < 2:
                continue
            keep = max(same, key=lambda p: (len(PurePosixPath(p).name), p))
            for path in same:
                if path != keep:
                    old = by_path[path]
                    by_path[path] = Entry(
                        "symlink", path, 0o777, old.uid, old.gid, target=PurePosixPath(keep).name
                    )


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
                raise SpecError(
                    f"/{name} is a {existing.kind} but /{path} needs it to be a directory"
                )


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
        info.size = len(entry.data) if entry.data is not None else os.stat(entry.src or "").st_size
    return info


def write_gzip(tar: bytes, output: Path) -> None:
    """Gzip with a zero header timestamp and no file name, written atomically."""
    temporary = output.with_name(output.name + ".partial")
    with open(temporary, "wb") as sink:
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6
        ) as zipped:
            zipped.write(tar)
    temporary.replace(output)


def write_layer(entries: list[Entry], mtime: int, output: Path) -> None:
    """Writes the tar into gzip with a zero header timestamp and no file name."""
    raw = io.BytesIO()
    with tarfile.open(
        fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8"
    ) as archive:
        for entry in entries:
            info = tar_info(entry, mtime)
            if entry.kind == "file" and entry.data is not None:
                archive.addfile(info, io.BytesIO(entry.data))
            elif entry.kind == "file":
                with open(entry.src or "", "rb") as source:
                    archive.addfile(info, source)
            else:
                archive.addfile(info)
    write_gzip(raw.getvalue(), output)


def gzip_layer(source: Path, output: Path) -> None:
    """Compresses a plain tar layer the same way; a gzipped one is copied as is."""
    data = source.read_bytes()
    if data[:2] == b"\x1f\x8b":
        temporary = output.with_name(output.name + ".partial")
        temporary.write_bytes(data)
        temporary.replace(output)
    else:
        write_gzip(data, output)


def filter_layer(rules: list[path_rules.Rule], source: Path, output: Path) -> int:
    """Copies a tar layer without the members the rules drop; returns how many
    were dropped. A directory stays while anything below it stays, and a kept
    hard link to a dropped file is an error (it would point at nothing)."""
    # utf-8, not tarfile's default (the locale's encoding): under an ASCII locale a non-ASCII
    # name of a GNU or ustar input came back out as a pax hdrcharset=BINARY record.
    with tarfile.open(source, mode="r:*", encoding="utf-8") as archive:
        members = archive.getmembers()
        names = [path_rules.relative(m.name) for m in members]
        gone = {name for name in names if name and path_rules.dropped(rules, name)}
        kept_names = [name for name in names if name not in gone]
        for name in kept_names:
            for parent in PurePosixPath(name).parents:
                gone.discard(str(parent))
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=archive.format, encoding="utf-8") as sink:
            for member, name in zip(members, names):
                if name in gone:
                    continue
                if member.islnk() and path_rules.relative(member.linkname) in gone:
                    raise SpecError(
                        f"/{name} is a hard link to /{path_rules.relative(member.linkname)}, which the rules drop; drop both or neither"
                    )
                sink.addfile(member, archive.extractfile(member) if member.isfile() else None)
    write_gzip(raw.getvalue(), output)
    return len(gone)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--filter"]:
        if len(argv) != 4:
            print(
                "usage: layer_builder --filter RULES LAYER.tar[.gz] OUTPUT.tar.gz", file=sys.stderr
            )
            return 2
        try:
            rules = path_rules.parse_filter(Path(argv[1]).read_text(encoding="utf-8").splitlines())
            filter_layer(rules, Path(argv[2]), Path(argv[3]))
        except (OSError, tarfile.TarError, path_rules.RuleError, SpecError) as error:
            print(f"layer_builder: {argv[1]}: {error}", file=sys.stderr)
            return 1
        return 0
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
