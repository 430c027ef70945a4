"""Writes an OCI image layout and a docker-archive tar from gzipped layers and a config.

The offline CI image (//image/offline) is assembled with this where //image uses rules_oci,
which the offline build cannot reach; the layers are the same targets (docs/building.md "The CI
image"). Our own because the assemblers Debian packages (buildah, umoci, skopeo) need a
container storage or user namespaces that a Bazel action does not have, and the format is
small: blobs named by their sha256, a config whose rootfs.diff_ids are the sha256 of each
layer's uncompressed tar, a manifest naming the config and the layers in order, an index.

Two outputs:
  --layout DIR    an OCI image layout (oci-layout, index.json, blobs/sha256/...), what the
                  image checks read (image/layers/oci_layout.py, CEPHALOPROXY_IMAGE_LAYOUT)
  --tarball FILE  a docker-archive (manifest.json + the same blobs): `docker load` (20.10
                  cannot load an OCI layout) and `podman load` both read it
  --config-out F  the config blob once more, as a file of its own
Deterministic: JSON with sorted keys and no spaces, tar members sorted with mtime 0.

Spec (written by image/offline/defs.bzl):
  {"architecture": "amd64", "os": "linux", "repo_tag": "cephaloproxy:ci",
   "config": {"entrypoint": [...], "env": {...}, "exposed_ports": [...], "user": "1000",
              "workdir": "/home/squid"},
   "labels": "path of key=value lines", "created": "path of one RFC 3339 line",
   "layers": ["path.tar.gz", ...]}
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# Docker's names for the config keys of image_config.bzl.
CONFIG_KEYS = {
    "entrypoint": "Entrypoint",
    "env": "Env",
    "exposed_ports": "ExposedPorts",
    "user": "User",
    "workdir": "WorkingDir",
    "stop_signal": "StopSignal",
}
# The OCI platform variant of each architecture that has one.
VARIANTS = {"arm64": "v8"}


class WriterError(Exception):
    """An input cannot make an image; the message names it."""


@dataclass(frozen=True)
class Blob:
    digest: str  # "sha256:<hex>"
    size: int
    data: bytes | None = None  # JSON blobs; layers are copied from `source`
    source: Path | None = None

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def json_blob(value: object) -> Blob:
    data = canonical_json(value)
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), data=data)


def layer_blob(path: Path) -> tuple[Blob, str]:
    """The gzipped layer as a blob, and its diff_id (sha256 of the uncompressed tar)."""
    compressed = hashlib.sha256()
    uncompressed = hashlib.sha256()
    with open(path, "rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            raise WriterError(f"{path} is not a gzipped layer")
        raw.seek(0)
        while chunk := raw.read(1 << 20):
            compressed.update(chunk)
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                uncompressed.update(chunk)
    except (OSError, EOFError) as error:
        raise WriterError(f"{path}: corrupt gzip: {error}") from error
    size = path.stat().st_size
    return Blob(
        "sha256:" + compressed.hexdigest(), size, source=path
    ), "sha256:" + uncompressed.hexdigest()


def read_labels(path: Path) -> dict[str, str]:
    labels: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise WriterError(f"{path}:{number}: expected key=value, got {line!r}")
        labels[key] = value
    return labels


def image_config(
    spec: dict[str, object], labels: dict[str, str], created: str, diff_ids: list[str]
) -> dict[str, object]:
    """The OCI image config: the shared image_config.bzl values under Docker's key names."""
    source = spec["config"]
    if not isinstance(source, dict):
        raise WriterError("spec 'config' must be an object (image/parts/image_config.bzl)")
    unknown = sorted(set(source) - set(CONFIG_KEYS))
    if unknown:
        raise WriterError(
            f"config keys {unknown} are not known to oci_writer; known: {sorted(CONFIG_KEYS)}"
        )
    inner: dict[str, object] = {}
    for key, value in source.items():
        if key == "env":
            inner["Env"] = [f"{name}={text}" for name, text in value.items()]
        elif key == "exposed_ports":
            inner["ExposedPorts"] = {port: {} for port in value}
        else:
            inner[CONFIG_KEYS[key]] = value
    if labels:
        inner["Labels"] = labels
    architecture = str(spec["architecture"])
    config: dict[str, object] = {
        "architecture": architecture,
        "os": str(spec.get("os", "linux")),
        "created": created,
        "config": inner,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    if architecture in VARIANTS:
        config["variant"] = VARIANTS[architecture]
    return config


def assemble(spec: dict[str, object]) -> tuple[Blob, Blob, list[Blob]]:
    """(manifest, config, layers) blobs."""
    raw_layers = spec.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise WriterError("spec 'layers' must list at least one layer")
    layers, diff_ids = zip(*(layer_blob(Path(str(p))) for p in raw_layers), strict=True)
    labels = read_labels(Path(str(spec["labels"]))) if spec.get("labels") else {}
    created = (
        Path(str(spec["created"])).read_text(encoding="utf-8").strip()
        if spec.get("created")
        else "1970-01-01T00:00:00Z"
    )
    config = json_blob(image_config(spec, labels, created, list(diff_ids)))
    manifest = json_blob(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": b.digest, "size": b.size} for b in layers
            ],
        }
    )
    return manifest, config, list(layers)


def blob_bytes(blob: Blob) -> bytes:
    if blob.data is not None:
        return blob.data
    return (blob.source or Path()).read_bytes()


def write_layout(
    directory: Path, manifest: Blob, config: Blob, layers: list[Blob], repo_tag: str
) -> None:
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in [config, manifest]:
        (blobs / blob.hex).write_bytes(blob.data or b"")
    for blob in layers:
        shutil.copyfile(blob.source or Path(), blobs / blob.hex)
    (directory / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    descriptor: dict[str, object] = {
        "mediaType": OCI_MANIFEST,
        "digest": manifest.digest,
        "size": manifest.size,
    }
    if repo_tag:
        descriptor["annotations"] = {"org.opencontainers.image.ref.name": repo_tag}
    (directory / "index.json").write_bytes(
        canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]})
    )


def _add(
    archive: tarfile.TarFile, name: str, data: bytes | None = None, source: Path | None = None
) -> None:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uname, info.gname = 0o644, 0, "", ""
    if data is not None:
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    else:
        info.size = (source or Path()).stat().st_size
        with open(source or Path(), "rb") as handle:
            archive.addfile(info, handle)


def write_docker_archive(output: Path, config: Blob, layers: list[Blob], repo_tag: str) -> None:
    """manifest.json + blobs: what `docker load` and `podman load` read."""
    manifest = [
        {
            "Config": f"blobs/sha256/{config.hex}",
            "RepoTags": [repo_tag] if repo_tag else [],
            "Layers": [f"blobs/sha256/{b.hex}" for b in layers],
        }
    ]
    members: dict[str, tuple[bytes | None, Path | None]] = {
        f"blobs/sha256/{config.hex}": (config.data, None)
    }
    for blob in layers:
        members[f"blobs/sha256/{blob.hex}"] = (None, blob.source)
    members["manifest.json"] = (canonical_json(manifest), None)
    temporary = output.with_name(output.name + ".partial")
    with tarfile.open(temporary, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as archive:
        for directory in ("blobs/", "blobs/sha256/"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime, info.uname, info.gname = (
                tarfile.DIRTYPE,
                0o755,
                0,
                "",
                "",
            )
            archive.addfile(info)
        for name in sorted(members):
            data, source = members[name]
            _add(archive, name, data, source)
    temporary.replace(output)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--layout", type=Path, required=True)
    parser.add_argument("--tarball", type=Path)
    parser.add_argument(
        "--config-out", type=Path, help="also write the config blob here (reproducibility checks)"
    )
    args = parser.parse_args(argv)
    try:
        spec = json.loads(args.spec.read_text(encoding="utf-8"))
        manifest, config, layers = assemble(spec)
        repo_tag = str(spec.get("repo_tag") or "")
        write_layout(args.layout, manifest, config, layers, repo_tag)
        if args.tarball:
            write_docker_archive(args.tarball, config, layers, repo_tag)
        if args.config_out:
            args.config_out.write_bytes(config.data or b"")
    except (WriterError, OSError, ValueError, KeyError) as error:
        print(f"oci_writer: {args.spec}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
