"""Compares two build outputs (layers, OCI layouts, JSON) and names the first difference, diffoci-style.

    bazel run //image/layers:layer_diff -- FIRST SECOND
    python3 -m image.layers.layer_diff FIRST SECOND

FIRST and SECOND are the same output of two builds: layer tarballs (plain tar or
gzip), OCI image layouts (directories with index.json and blobs/, e.g.
bazel-bin/image/image), JSON documents (image configs, SBOMs), other
directories (compared file by file) or any other file. Prints "identical" and
the digest and exits 0, or prints where they first differ and exits 1: for a
layout the layer (or the config's first differing JSON value), then in a layer
the member's path and, for each side, its type (and link target), size, mode,
uid:gid, mtime and content sha256. When every member agrees it says whether the
tar headers or only the compression differ. Exit 2: the inputs cannot be read.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image.layers import oci_layout


@dataclass(frozen=True)
class Member:
    """What a layer says about one path, as compared: metadata and a content digest."""

    path: str
    kind: str
    linkname: str
    size: int
    mode: int
    uid: int
    gid: int
    owner_names: str
    mtime: float
    sha256: str
    pax: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        """One line: type, size, mode, uid:gid, mtime and digest (or link target)."""
        kind = f"{self.kind} -> {self.linkname}" if self.linkname else self.kind
        names = f" ({self.owner_names})" if self.owner_names != ":" else ""
        text = f"{kind} size={self.size} mode={self.mode:04o} uid:gid={self.uid}:{self.gid}{names} mtime={int(self.mtime) if float(self.mtime).is_integer() else self.mtime}"
        text += f" sha256={self.sha256}" if self.sha256 else ""
        return text + "".join(f" pax:{key}={value}" for key, value in self.pax)


# Pax records that Member already shows as fields.
_SHOWN_PAX = {"path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime"}


def read_members(layer: Path) -> list[Member]:
    """The layer's members in archive order, file contents hashed."""
    found: list[Member] = []
    with oci_layout.open_layer(layer) as archive:
        for info in archive:
            digest = ""
            if info.isfile():
                content = archive.extractfile(info)
                if content is not None:
                    sha256 = hashlib.sha256()
                    while chunk := content.read(1 << 20):
                        sha256.update(chunk)
                    digest = sha256.hexdigest()
            pax = tuple(sorted((k, v) for k, v in info.pax_headers.items() if k not in _SHOWN_PAX))
            found.append(
                Member(
                    info.name,
                    oci_layout.member_kind(info),
                    info.linkname,
                    info.size,
                    info.mode,
                    info.uid,
                    info.gid,
                    f"{info.uname}:{info.gname}",
                    info.mtime,
                    digest,
                    pax,
                )
            )
    return found


def _tar_bytes(layer: Path) -> bytes:
    data = layer.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _side(label: str, member: Member | None) -> str:
    return f"  {label}: {member.describe() if member else '(absent)'}"


def compare_layers(first: Path, second: Path) -> list[str]:
    """Lines naming the first difference between two layer files; [] when byte-identical."""
    if first.read_bytes() == second.read_bytes():
        return []
    ours, theirs = read_members(first), read_members(second)
    for index in range(max(len(ours), len(theirs))):
        a = ours[index] if index < len(ours) else None
        b = theirs[index] if index < len(theirs) else None
        if a == b:
            continue
        if a and b and a.path == b.path:
            return [f"member {index} differs: {a.path}", _side("first ", a), _side("second", b)]
        return [
            f"member {index} differs: {a.path if a else '(end of layer)'} vs {b.path if b else '(end of layer)'}",
            _side("first ", a),
            _side("second", b),
        ]
    if _tar_bytes(first) == _tar_bytes(second):
        return [
            f"same {len(ours)} members and tar; only the compression differs (gzip header or level)"
        ]
    return [
        f"same {len(ours)} members and contents; the tar headers differ (format, pax records or padding)"
    ]


def compare_layouts(first: Path, second: Path) -> list[str]:
    """Lines naming the first difference between two OCI layouts; [] when the manifests agree."""
    first_digest, first_manifest, _, first_blobs = oci_layout.read_manifest(first)
    second_digest, second_manifest, _, second_blobs = oci_layout.read_manifest(second)
    if first_digest == second_digest:
        return []
    lines = [f"manifest {first_digest} vs {second_digest}"]
    manifests: tuple[Any, Any] = (first_manifest, second_manifest)  # parsed JSON
    configs = [m["config"]["digest"] for m in manifests]
    if configs[0] != configs[1]:
        lines.append(f"config {configs[0]} vs {configs[1]}")
    layers = [[str(layer["digest"]) for layer in m["layers"]] for m in manifests]
    for index, (a, b) in enumerate(zip(layers[0], layers[1], strict=False)):
        if a != b:
            return (
                lines
                + [f"layer {index}: {a} vs {b}"]
                + compare_layers(first_blobs[index], second_blobs[index])
            )
    if len(layers[0]) != len(layers[1]):
        lines.append(
            f"{len(layers[0])} layers vs {len(layers[1])}; the first {min(map(len, layers))} agree"
        )
    elif configs[0] != configs[1]:
        lines += json_difference(
            oci_layout.read_manifest(first)[2], oci_layout.read_manifest(second)[2], "config"
        )
    elif len(lines) == 1:
        lines.append("same config and layers; the manifests differ in annotations or media types")
    return lines


_ABSENT = object()


def _first_json_difference(a: object, b: object, where: str) -> tuple[str, object, object] | None:
    """The path ($.key[0]...) and both values of the first place two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [
            *a,
            *(k for k in b if k not in a),
        ]:  # document order, then keys only the second has
            found = _first_json_difference(
                a.get(key, _ABSENT), b.get(key, _ABSENT), f"{where}.{key}"
            )
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for index in range(max(len(a), len(b))):
            found = _first_json_difference(
                a[index] if index < len(a) else _ABSENT,
                b[index] if index < len(b) else _ABSENT,
                f"{where}[{index}]",
            )
            if found:
                return found
        return None
    return None if a == b and type(a) is type(b) else (where, a, b)


def _json_text(value: object, limit: int = 200) -> str:
    text = "(absent)" if value is _ABSENT else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def json_difference(first: object, second: object, what: str = "JSON") -> list[str]:
    """Lines naming the first differing value of two parsed JSON documents; [] when equal."""
    found = _first_json_difference(first, second, "$")
    if found is None:
        return []
    where, a, b = found
    return [
        f"{what} value differs at {where}",
        f"  first : {_json_text(a)}",
        f"  second: {_json_text(b)}",
    ]


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return _ABSENT


def _is_tar(path: Path) -> bool:
    with path.open("rb") as handle:
        if handle.read(2) == b"\x1f\x8b":
            return True
    return tarfile.is_tarfile(path)


def _first_differing_byte(first: bytes, second: bytes) -> int:
    return next(
        (i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b),
        min(len(first), len(second)),
    )


def compare_other_files(first: Path, second: Path) -> list[str]:
    """Lines for two files that are neither layers nor JSON: sizes, digests, first differing byte."""
    a, b = first.read_bytes(), second.read_bytes()
    if a == b:
        return []
    return [
        f"content differs from byte {_first_differing_byte(a, b)}",
        f"  first : size={len(a)} sha256={hashlib.sha256(a).hexdigest()}",
        f"  second: size={len(b)} sha256={hashlib.sha256(b).hexdigest()}",
    ]


def _tree_files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if not path.is_dir())


def compare_trees(first: Path, second: Path) -> list[str]:
    """Lines naming the first file (in sorted order) where two directories differ."""
    ours, theirs = _tree_files(first), _tree_files(second)
    for name in sorted(set(ours) | set(theirs)):
        if name not in ours or name not in theirs:
            return [f"file {name} only in the {'second' if name not in ours else 'first'}"]
        lines = compare_paths(first / name, second / name)
        if lines:
            return [f"file {name} differs"] + lines
    return []


def compare_paths(first: Path, second: Path) -> list[str]:
    """Lines naming the first difference between two outputs of any kind; [] when they agree."""
    if first.is_dir() and second.is_dir():
        if (first / "index.json").is_file() and (second / "index.json").is_file():
            return compare_layouts(first, second)
        return compare_trees(first, second)
    if first.is_dir() != second.is_dir():
        return [
            f"a {'directory' if first.is_dir() else 'file'} vs a {'directory' if second.is_dir() else 'file'}"
        ]
    if first.read_bytes() == second.read_bytes():
        return []
    if _is_tar(first) and _is_tar(second):
        return compare_layers(first, second)
    parsed = _read_json(first), _read_json(second)
    if parsed[0] is not _ABSENT and parsed[1] is not _ABSENT:
        return json_difference(*parsed) or [
            "same JSON values; only the formatting (spacing, key order) differs"
        ]
    return compare_other_files(first, second)


def path_digest(path: Path) -> str:
    """sha256 of a file, or of a directory's sorted (relative path, executable bit, content digest) list."""
    if not path.is_dir():
        with path.open("rb") as handle:
            return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
    listing = "".join(
        f"{name}\0{os.access(path / name, os.X_OK):d}\0{path_digest(path / name)}\n"
        for name in _tree_files(path)
    )
    return "sha256:" + hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "first", type=Path, help="layer .tar/.tar.gz, OCI layout directory, JSON or any output"
    )
    parser.add_argument("second", type=Path, help="the same output of another build")
    args = parser.parse_args(argv)
    # `bazel run` starts in the runfiles; relative paths mean the caller's directory.
    caller = Path(os.environ.get("BUILD_WORKING_DIRECTORY", "."))
    args.first, args.second = caller / args.first, caller / args.second
    if args.first.is_dir() != args.second.is_dir():
        print("layer_diff: give two layer files or two OCI layout directories", file=sys.stderr)
        return 2
    try:
        lines = compare_paths(args.first, args.second)
        layout = args.first.is_dir() and (args.first / "index.json").is_file()
        digest = oci_layout.read_manifest(args.first)[0] if layout else path_digest(args.first)
    except (
        OSError,
        EOFError,
        tarfile.TarError,
        oci_layout.LayoutError,
        KeyError,
        TypeError,
    ) as error:
        print(f"layer_diff: {error}", file=sys.stderr)
        return 2
    if not lines:
        print(f"identical {digest}")
        return 0
    print("\n".join(lines))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
