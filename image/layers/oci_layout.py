"""Reads a built OCI image layout (//image:image) without a container runtime.

The layers are applied in order, whiteouts included, into one in-memory view of
the image's root filesystem, so checks can ask what a container would see:
owners, modes, symlinks and (on demand) file contents.
"""

from __future__ import annotations

import gzip
import json
import os
import posixpath
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_SYMLINK_HOPS = 40


class LayoutError(Exception):
    """The layout is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Entry:
    """One path of the merged root filesystem, as the last layer left it."""

    path: str  # absolute, e.g. "/usr/bin/python3"
    kind: str  # "file", "dir", "symlink", "hardlink" or "other"
    mode: int  # permission bits including setuid/setgid/sticky
    uid: int
    gid: int
    size: int
    linkname: str
    layer: int  # index of the layer that provided it


@dataclass
class Image:
    """The manifest, config and merged filesystem of one image."""

    layout: Path
    manifest: dict[str, object]
    config: dict[str, object]
    layer_blobs: list[Path]
    entries: dict[str, Entry] = field(default_factory=dict)
    # ELF files seen while reading layers: path -> parse result of a callback.
    file_facts: dict[str, object] = field(default_factory=dict)

    def lookup(self, path: str) -> Entry | None:
        return self.entries.get(normalize(path))

    def resolve(self, path: str) -> str | None:
        """Follows symlinks (in every path component) inside the image."""
        parts = [p for p in normalize(path).split("/") if p]
        resolved = "/"
        hops = 0
        while parts:
            candidate = posixpath.join(resolved, parts.pop(0))
            entry = self.entries.get(candidate)
            if entry is None:
                if not parts:
                    return None
                # Layers need not list every parent directory explicitly.
                resolved = candidate
                continue
            if entry.kind == "symlink":
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    return None
                target = entry.linkname
                base = "/" if target.startswith("/") else resolved
                parts = [p for p in normalize(posixpath.join(base, target)).split("/") if p] + parts
                resolved = "/"
                continue
            resolved = candidate
        return resolved

    def read_file(self, path: str) -> bytes:
        """Contents of a regular file (after resolving symlinks)."""
        real = self.resolve(path)
        entry = self.entries.get(real or "")
        if entry is None or entry.kind != "file":
            raise LayoutError(f"{path} is not a regular file in the image")
        with open_layer(self.layer_blobs[entry.layer]) as archive:
            for member in archive:
                if normalize(member.name) == real and member.isfile():
                    extracted = archive.extractfile(member)
                    if extracted is None:
                        break
                    return extracted.read()
        raise LayoutError(f"{path} vanished from layer {entry.layer}")


def normalize(path: str) -> str:
    """'./usr//bin/' -> '/usr/bin'."""
    stripped = path[2:] if path.startswith("./") else path
    return posixpath.normpath("/" + stripped.lstrip("/"))


def open_layer(blob: Path) -> tarfile.TarFile:
    """Layers may be plain tar or gzip; tarfile detects which."""
    return tarfile.open(blob, mode="r:*")


def _read_json(path: Path) -> dict[str, object]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LayoutError(f"cannot read {path}: {error}") from error


def _blob(layout: Path, digest: str) -> Path:
    algorithm, _, hex_digest = digest.partition(":")
    return layout / "blobs" / algorithm / hex_digest


def member_kind(member: tarfile.TarInfo) -> str:
    """file, dir, symlink, hardlink or other."""
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.isfile():
        return "file"
    return "other"


def _remove_tree(entries: dict[str, Entry], path: str) -> None:
    prefix = path.rstrip("/") + "/"
    for name in [n for n in entries if n == path or n.startswith(prefix)]:
        del entries[name]


def read_manifest(layout: Path) -> tuple[str, dict[str, object], dict[str, object], list[Path]]:
    """The layout's one manifest: its digest, the manifest, the config and the layer blobs."""
    index = _read_json(layout / "index.json")
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or len(manifests) != 1:
        raise LayoutError(f"{layout}/index.json should list exactly one image manifest")
    digest = str(manifests[0]["digest"])
    manifest_file = _blob(layout, digest)
    manifest = _read_json(manifest_file)
    config_descriptor, layers = manifest.get("config"), manifest.get("layers")
    if not isinstance(config_descriptor, dict) or not isinstance(layers, list):
        raise LayoutError(f"{manifest_file} should hold a config descriptor and a list of layers")
    config = _read_json(_blob(layout, str(config_descriptor["digest"])))
    blobs = [_blob(layout, str(layer["digest"])) for layer in layers]
    return digest, manifest, config, blobs


def load_image(
    layout: Path,
    inspect_file: Callable[[str, bytes], object | None] | None = None,
    inspect_prefix_bytes: bytes = b"",
) -> Image:
    """Reads the layout; inspect_file(path, data) runs on regular files whose
    contents start with inspect_prefix_bytes and its non-None results are kept."""
    _, manifest, config, blobs = read_manifest(layout)
    image = Image(layout=layout, manifest=manifest, config=config, layer_blobs=blobs)
    for layer_index, blob in enumerate(blobs):
        _apply_layer(image, layer_index, blob, inspect_file, inspect_prefix_bytes)
    return image


def _apply_layer(
    image: Image,
    layer_index: int,
    blob: Path,
    inspect_file: Callable[[str, bytes], object | None] | None,
    prefix: bytes,
) -> None:
    with open_layer(blob) as archive:
        for member in archive:
            path = normalize(member.name)
            base = posixpath.basename(path)
            if base == ".wh..wh..opq":
                _remove_tree(image.entries, posixpath.dirname(path))
                continue
            if base.startswith(".wh."):
                _remove_tree(image.entries, posixpath.join(posixpath.dirname(path), base[4:]))
                continue
            if path == "/":
                continue
            kind = member_kind(member)
            if kind != "dir":
                _remove_tree(image.entries, path)
            image.entries[path] = Entry(
                path=path,
                kind=kind,
                mode=member.mode,
                uid=member.uid,
                gid=member.gid,
                size=member.size,
                linkname=member.linkname,
                layer=layer_index,
            )
            image.file_facts.pop(path, None)
            if inspect_file is not None and kind == "file":
                extracted = archive.extractfile(member)
                if extracted is None:
                    continue
                head = extracted.read(len(prefix)) if prefix else b""
                if head != prefix:
                    continue
                fact = inspect_file(path, head + extracted.read())
                if fact is not None:
                    image.file_facts[path] = fact


def image_layout_from_env() -> Path | None:
    """The layout under test: $CEPHALOPROXY_IMAGE_LAYOUT (a runfiles path under
    Bazel), else bazel-bin/image/image when run as plain pytest after a build."""
    raw = os.environ.get("CEPHALOPROXY_IMAGE_LAYOUT")
    if not raw:
        default = Path("bazel-bin/image/image")
        return default if (default / "index.json").is_file() else None
    return find_runfile(raw)


def find_runfile(raw: str) -> Path:
    """Resolves a $(rootpath) value against the runfiles tree or the cwd."""
    candidates = [Path(raw)]
    for root_var in ("RUNFILES_DIR", "TEST_SRCDIR"):
        root = os.environ.get(root_var)
        if root:
            candidates += [Path(root) / raw, Path(root) / "_main" / raw]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise LayoutError(f"{raw} not found (tried {', '.join(str(c) for c in candidates)})")


def iter_entries(image: Image, kind: str | None = None) -> Iterator[Entry]:
    for entry in image.entries.values():
        if kind is None or entry.kind == kind:
            yield entry


def gzip_uncompressed_size(blob: Path) -> int:
    """Bytes of the tar inside a (possibly gzipped) layer blob."""
    with open(blob, "rb") as raw:
        magic = raw.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    total = 0
    with opener(blob, "rb") as stream:
        while chunk := stream.read(1 << 20):
            total += len(chunk)
    return total
