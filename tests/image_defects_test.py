"""Deriving broken docker-archives (tests/support/image_defects.py) from a synthetic one, offline."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support import image_defects, image_source

MODULE = "/usr/lib/cephaloproxy/entrypoint/settings.py"
BYTECODE = "/usr/lib/cephaloproxy/entrypoint/__pycache__/settings.cpython-313.pyc"
KEPT = "/usr/lib/cephaloproxy/entrypoint/main.py"


def _layer(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _archive(path: Path) -> Path:
    """A docker-archive like rules_oci's: a gzipped base layer and an uncompressed app layer."""
    base = _layer({"/etc/os-release": b"ID=debian\n"})
    app = _layer({MODULE: b"x = 1\n", BYTECODE: b"pyc", KEPT: b"y = 2\n"})
    layers = [gzip.compress(base), app]
    config = {
        "architecture": "amd64",
        "config": {"User": "1000:0", "Entrypoint": ["/usr/bin/python3"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in (base, app)],
        },
    }
    config_bytes = json.dumps(config).encode()
    names = [f"blobs/sha256/{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    manifest = [
        {"Config": "blobs/sha256/cfg", "RepoTags": ["cephaloproxy:latest"], "Layers": names}
    ]
    with tarfile.open(path, "w") as archive:
        for name, data in [("manifest.json", json.dumps(manifest).encode()), ("blobs/sha256/cfg", config_bytes),
                           *zip(names, layers, strict=True)]:  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _files(layer: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as archive:
        return {"/" + m.name for m in archive.getmembers()}


def _diff_ids_match(image: image_defects.Archive) -> None:
    expected = [
        f"sha256:{hashlib.sha256(image_defects._uncompressed(layer)).hexdigest()}"
        for layer in image.layers
    ]
    assert image_defects._diff_ids(image.config) == expected


def _run_config(image: image_defects.Archive) -> dict[str, object]:
    """The image config's "config" object: User, Entrypoint and the like."""
    run_config = image.config["config"]
    assert isinstance(run_config, dict), image.config
    return run_config


def test_with_user_changes_only_the_config(tmp_path: Path) -> None:
    source = _archive(tmp_path / "real.tar")
    broken = image_defects.with_user(source, tmp_path / "root.tar", "0")
    image = image_defects.read_archive(broken)
    assert _run_config(image)["User"] == "0"
    assert _run_config(image)["Entrypoint"] == ["/usr/bin/python3"]
    assert image.layers == image_defects.read_archive(source).layers
    assert image_source.repo_tags_in_tarball(broken) == ["cephaloproxy-planted:user-0"]


def test_without_paths_drops_the_module_and_its_bytecode_and_fixes_the_diff_id(
    tmp_path: Path,
) -> None:
    source = _archive(tmp_path / "real.tar")
    broken = image_defects.without_paths(source, tmp_path / "nomodule.tar", [MODULE])
    image = image_defects.read_archive(broken)
    assert _files(image.layers[1]) == {KEPT}
    assert image.layers[0] == image_defects.read_archive(source).layers[0], (
        "untouched layers keep their bytes"
    )
    _diff_ids_match(image)
    assert image_source.repo_tags_in_tarball(broken) == ["cephaloproxy-planted:without-settings-py"]


def test_a_defect_that_cannot_be_planted_is_an_error(tmp_path: Path) -> None:
    source = _archive(tmp_path / "real.tar")
    with pytest.raises(image_defects.ImageDefectError, match="no layer holds"):
        image_defects.without_paths(source, tmp_path / "x.tar", ["/no/such/file.py"])
    not_docker = tmp_path / "oci.tar"
    with tarfile.open(not_docker, "w"):
        pass
    with pytest.raises(image_defects.ImageDefectError, match=r"no manifest\.json"):
        image_defects.read_archive(not_docker)
