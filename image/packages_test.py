"""The image holds exactly the manifest's Debian packages, as the lock pins them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from image.built_image import built_image_or_skip
from image.debian_manifest import lock_packages, manifest_archs, manifest_packages, status_records
from image.layers.oci_layout import Image, find_runfile


def source_file(env_var: str, default: str) -> Path:
    raw = os.environ.get(env_var)
    return find_runfile(raw) if raw else Path(default)


MANIFEST = source_file("CEPHALOPROXY_IMAGE_MANIFEST", "image/trixie.yaml")
LOCK = source_file("CEPHALOPROXY_IMAGE_LOCK", "image/trixie.lock.json")


@pytest.fixture(scope="module")
def image() -> Image:
    return built_image_or_skip()


def test_lock_pins_exactly_the_manifest_for_every_arch() -> None:
    wanted = set(manifest_packages(MANIFEST))
    locked = lock_packages(LOCK)
    assert set(locked) == set(manifest_archs(MANIFEST))
    for arch, packages in locked.items():
        assert set(packages) == wanted, (
            f"{arch}: lock has {sorted(set(packages) ^ wanted)} beyond/short of the manifest"
        )


def test_image_packages_equal_the_manifest(image: Image) -> None:
    records = status_records(image)
    assert set(records) == set(manifest_packages(MANIFEST))
    for name, fields in records.items():
        assert fields["Package"] == name


def test_image_package_versions_match_the_lock(image: Image) -> None:
    arch = str(image.config["architecture"])
    pinned = lock_packages(LOCK)[arch]
    for name, fields in status_records(image).items():
        assert fields["Version"] == pinned[name], (
            f"{name}: image has {fields['Version']}, lock pins {pinned[name]}"
        )
        assert fields["Architecture"] in (arch, "all")
