"""Synthetic tar layers and OCI layouts for tests that must not need a built image."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Member:
    """One tar member: a file (data), a dir, a symlink (target) or a hard link."""

    path: str
    kind: str = "file"  # "file", "dir", "symlink" or "hardlink"
    mode: int = 0o644
    data: bytes = b""
    target: str = ""


def file(path: str, data: bytes = b"", mode: int = 0o644) -> Member:
    return Member(path, "file", mode, data)


def script(path: str, first_line: str, mode: int = 0o755) -> Member:
    return Member(path, "file", mode, first_line.encode() + b"\n")


def directory(path: str, mode: int = 0o755) -> Member:
    return Member(path, "dir", mode)


def symlink(path: str, target: str) -> Member:
    return Member(path, "symlink", 0o777, target=target)


def tar_bytes(members: list[Member]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            info = tarfile.TarInfo(member.path.lstrip("/"))
            info.mode = member.mode
            if member.kind == "dir":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif member.kind in ("symlink", "hardlink"):
                info.type = tarfile.SYMTYPE if member.kind == "symlink" else tarfile.LNKTYPE
                info.linkname = member.target
                archive.addfile(info)
            else:
                info.size = len(member.data)
                archive.addfile(info, io.BytesIO(member.data))
    return raw.getvalue()


def write_tar(path: Path, members: list[Member], compress: bool = True) -> Path:
    data = tar_bytes(members)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def write_layout(directory_path: Path, layers: list[Path], architecture: str = "amd64") -> Path:
    """An OCI image layout (index.json, manifest, config, blobs) of the given layer files."""
    blobs = directory_path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    layer_descriptors = []
    for layer in layers:
        data = layer.read_bytes()
        layer_descriptors.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": put(data),
                "size": len(data),
            }
        )
    config = json.dumps({"architecture": architecture, "os": "linux", "config": {}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(config),
                "size": len(config),
            },
            "layers": layer_descriptors,
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": put(manifest),
                "size": len(manifest),
            }
        ],
    }
    (directory_path / "index.json").write_text(json.dumps(index))
    return directory_path
