"""Derive a deliberately broken copy of a docker-archive image, to prove the suite catches image defects.

The copy is a plain docker-archive (manifest.json, the config and the layers under
blobs/sha256/) with its own tag, so loading it never replaces the image under test.
Unchanged layers keep their bytes and digests (the engine reuses them, so loading is
quick); a layer that loses files is rewritten uncompressed, and its diff_id in the config
follows, because docker and podman both verify it.

Why by hand: no Debian or PyPI tool edits a docker-archive offline (skopeo copies, it
does not delete files from a layer), and the format is three JSON documents and tars.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import posixpath
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PLANTED_REPOSITORY = "cephaloproxy-planted"


class ImageDefectError(ValueError):
    """The source tar is not a docker-archive this module can rewrite, or the defect does not apply."""


@dataclasses.dataclass(frozen=True)
class Archive:
    """A docker-archive read into memory: its manifest entry, config and layer blobs, in order."""

    config: dict[str, object]
    layers: list[bytes]


def _normal(name: str) -> str:
    return posixpath.normpath(name.removeprefix("./")).lstrip("/")


def read_archive(tarball: Path) -> Archive:
    """The first image of a docker-archive (manifest.json's first entry)."""
    try:
        with tarfile.open(tarball) as archive:
            members = {_normal(m.name): m for m in archive.getmembers() if m.isfile()}

            def blob(name: str) -> bytes:
                member = members.get(_normal(name))
                handle = archive.extractfile(member) if member is not None else None
                if handle is None:
                    raise ImageDefectError(
                        f"{tarball}: {name} (named by manifest.json) is not in the tar"
                    )
                return handle.read()

            if "manifest.json" not in members:
                raise ImageDefectError(f"{tarball}: no manifest.json, not a docker-archive")
            manifest = json.loads(blob("manifest.json"))
            entry = manifest[0]
            config = json.loads(blob(entry["Config"]))
            layers = [blob(name) for name in entry["Layers"]]
    except (tarfile.TarError, OSError, KeyError, IndexError, json.JSONDecodeError) as error:
        raise ImageDefectError(f"{tarball}: not a readable docker-archive ({error!r})") from error
    return Archive(config=config, layers=layers)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def write_archive(image: Archive, destination: Path, tag: str) -> Path:
    """`image` as a docker-archive tagged PLANTED_REPOSITORY:tag."""
    config_bytes = json.dumps(image.config, sort_keys=True).encode()
    config_name = f"blobs/sha256/{_digest(config_bytes)}"
    layer_names = [f"blobs/sha256/{_digest(layer)}" for layer in image.layers]
    manifest = [
        {"Config": config_name, "RepoTags": [f"{PLANTED_REPOSITORY}:{tag}"], "Layers": layer_names}
    ]
    with tarfile.open(destination, "w") as archive:
        _add(archive, "manifest.json", json.dumps(manifest).encode())
        _add(archive, config_name, config_bytes)
        for name, layer in dict(zip(layer_names, image.layers, strict=True)).items():
            _add(archive, name, layer)
    return destination


def _uncompressed(layer: bytes) -> bytes:
    return gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer


def _without(layer: bytes, doomed: Callable[[str], bool]) -> tuple[bytes, list[str]]:
    """The layer (uncompressed) minus every member `doomed` selects, and the names removed."""
    removed: list[str] = []
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(_uncompressed(layer))) as source,
        tarfile.open(fileobj=out, mode="w") as target,
    ):
        for member in source.getmembers():
            if doomed("/" + _normal(member.name)):
                removed.append("/" + _normal(member.name))
                continue
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
    return out.getvalue(), removed


def with_user(tarball: Path, destination: Path, user: str) -> Path:
    """A copy whose config runs as `user` (e.g. "0": a root image); the layers are untouched."""
    image = read_archive(tarball)
    config: dict[str, Any] = dict(image.config)  # parsed JSON
    config["config"] = {**(config.get("config") or {}), "User": user}
    return write_archive(
        Archive(config, image.layers), destination, f"user-{user.replace(':', '-')}"
    )


def without_paths(tarball: Path, destination: Path, paths: Sequence[str]) -> Path:
    """A copy without the files at `paths` (and their __pycache__ bytecode), in whichever layer holds them.

    Raises when a path is in no layer: a defect that was never planted proves nothing.
    """
    wanted = {"/" + _normal(path) for path in paths}
    bytecode_of = {posixpath.join(posixpath.dirname(p), "__pycache__", posixpath.basename(p)[: -len(".py")] + "."): p
                   for p in wanted if p.endswith(".py")}  # fmt: skip

    def doomed(name: str) -> bool:
        return name in wanted or any(
            name.startswith(prefix) and name.endswith(".pyc") for prefix in bytecode_of
        )

    image = read_archive(tarball)
    layers, diff_ids, removed = list(image.layers), list(_diff_ids(image.config)), []
    for index, layer in enumerate(image.layers):
        rewritten, gone = _without(layer, doomed)
        if gone:
            layers[index], diff_ids[index] = rewritten, f"sha256:{_digest(rewritten)}"
            removed += gone
    missing = sorted(wanted - set(removed))
    if missing:
        raise ImageDefectError(f"{tarball}: no layer holds {missing}; nothing was planted")
    config: dict[str, Any] = dict(image.config)  # parsed JSON
    config["rootfs"] = {**config["rootfs"], "diff_ids": diff_ids}
    name = posixpath.basename(sorted(wanted)[0]).replace(".", "-")
    return write_archive(Archive(config, layers), destination, f"without-{name}")


def _diff_ids(config: dict[str, object]) -> list[str]:
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise ImageDefectError("the image config has no rootfs.diff_ids")
    return list(rootfs["diff_ids"])
