"""Choosing the image under test from the environment, and reading tags from image tars."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support import image_source


def _tar_with(path: Path, name: str, payload: object) -> Path:
    data = json.dumps(payload).encode()
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def test_nothing_named_means_skip_with_reason() -> None:
    assert image_source.choose_image({}) is None
    assert image_source.IMAGE_ENV in image_source.NO_IMAGE_REASON
    assert image_source.TARBALL_ENV in image_source.NO_IMAGE_REASON


def test_reference_wins_over_tarball(tmp_path: Path) -> None:
    choice = image_source.choose_image(
        {image_source.IMAGE_ENV: "cephaloproxy:dev", image_source.TARBALL_ENV: "x"}
    )
    assert choice == image_source.ImageChoice(reference="cephaloproxy:dev")


def test_tarball_resolves_through_runfiles(tmp_path: Path) -> None:
    runfiles = tmp_path / "runfiles"
    tar = runfiles / "_main" / "image" / "tarball.tar"
    tar.parent.mkdir(parents=True)
    _tar_with(tar, "manifest.json", [{"RepoTags": ["cephaloproxy:latest"]}])
    environ = {image_source.TARBALL_ENV: "image/tarball.tar", "RUNFILES_DIR": str(runfiles)}
    assert image_source.choose_image(environ) == image_source.ImageChoice(tarball=tar)
    environ = {image_source.TARBALL_ENV: "_main/image/tarball.tar", "TEST_SRCDIR": str(runfiles)}
    assert image_source.choose_image(environ) == image_source.ImageChoice(tarball=tar)


def test_missing_tarball_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(image_source.ImageSourceError, match="nowhere.tar.*no such file"):
        image_source.choose_image({image_source.TARBALL_ENV: str(tmp_path / "nowhere.tar")})


def test_repo_tags_docker_and_oci(tmp_path: Path) -> None:
    docker = _tar_with(tmp_path / "d.tar", "manifest.json", [{"RepoTags": ["a:1", "b:2"]}])
    assert image_source.repo_tags_in_tarball(docker) == ["a:1", "b:2"]
    oci = _tar_with(
        tmp_path / "o.tar",
        "index.json",
        {
            "manifests": [
                {"annotations": {"org.opencontainers.image.ref.name": "cephaloproxy:latest"}}
            ]
        },
    )
    assert image_source.repo_tags_in_tarball(oci) == ["cephaloproxy:latest"]
    not_an_image = _tar_with(tmp_path / "x.tar", "hello.json", {})
    with pytest.raises(image_source.ImageSourceError, match="neither manifest.json"):
        image_source.repo_tags_in_tarball(not_an_image)
