"""Compares two image layers or OCI layouts and names the first differing member, diffoci-style.

    bazel run //image/layers:layer_diff -- FIRST SECOND
    python3 -m image.layers.layer_diff FIRST SECOND

FIRST and SECOND are both layer tarballs (plain tar or gzip) or both OCI image
layouts (directories with index.json and blobs/, e.g. bazel-bin/image/image of
two builds). Prints "identical" and the digest and exits 0, or prints where they
first differ and exits 1: the layer, then the member's path and, for each side,
its type (and link target), size, mode, uid:gid, mtime and content sha256. When
every member agrees it says whether the tar headers or only the compression
differ. Exit 2: the inputs cannot be read.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

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
                digest = hashlib.file_digest(content, "sha256").hexdigest() if content else ""
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
    configs = [m["config"]["digest"] for m in (first_manifest, second_manifest)]  # type: ignore[index]
    if configs[0] != configs[1]:
        lines.append(f"config {configs[0]} vs {configs[1]}")
    layers = [
        [str(layer["digest"]) for layer in m["layers"]] for m in (first_manifest, second_manifest)
    ]  # type: ignore[union-attr, index]
    for index, (a, b) in enumerate(zip(layers[0], layers[1])):
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
    elif len(lines) == 1:
        lines.append("same config and layers; the manifests differ in annotations or media types")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="layer .tar/.tar.gz or OCI layout directory")
    parser.add_argument("second", type=Path, help="the same kind as FIRST")
    args = parser.parse_args(argv)
    # `bazel run` starts in the runfiles; relative paths mean the caller's directory.
    caller = Path(os.environ.get("BUILD_WORKING_DIRECTORY", "."))
    args.first, args.second = caller / args.first, caller / args.second
    if args.first.is_dir() != args.second.is_dir():
        print("layer_diff: give two layer files or two OCI layout directories", file=sys.stderr)
        return 2
    try:
        if args.first.is_dir():
            lines = compare_layouts(args.first, args.second)
            digest = oci_layout.read_manifest(args.first)[0]
        else:
            lines = compare_layers(args.first, args.second)
            digest = "sha256:" + hashlib.sha256(args.first.read_bytes()).hexdigest()
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
