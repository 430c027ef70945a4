"""The image holds exactly the manifests' Debian packages, as their locks pin them.

CEPHALOPROXY_IMAGE_MANIFEST and CEPHALOPROXY_IMAGE_LOCK name one manifest and its lock, or
several separated by spaces in the same order: the offline CI image also holds Debian's
python3.13 (image/offline/python.yaml and python.lock.json), the shipped image does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from image.checks.built_image import built_image_or_skip
from image.checks.debian_manifest import (
    lock_packages,
    manifest_archs,
    manifest_packages,
    status_records,
)
from image.layers.oci_layout import Image, find_runfile


def source_files(env_var: str, default: str) -> list[Path]:
    raw = os.environ.get(env_var)
    return [find_runfile(item) for item in raw.split()] if raw else [Path(default)]


MANIFESTS = source_files("CEPHALOPROXY_IMAGE_MANIFEST", "image/trixie.yaml")
LOCKS = source_files("CEPHALOPROXY_IMAGE_LOCK", "image/trixie.lock.json")


def all_manifest_packages() -> set[str]:
    return {name for manifest in MANIFESTS for name in manifest_packages(manifest)}


def all_locked(arch: str) -> dict[str, str]:
    pinned: dict[str, str] = {}
    for lock in LOCKS:
        pinned |= lock_packages(lock)[arch]
    return pinned


@pytest.fixture(scope="module")
def image() -> Image:
    return built_image_or_skip()


def test_lock_pins_exactly_the_manifest_for_every_arch() -> None:
    assert len(MANIFESTS) == len(LOCKS), "give one lock per manifest, in the same order"
    for manifest, lock in zip(MANIFESTS, LOCKS, strict=True):
        wanted = set(manifest_packages(manifest))
        locked = lock_packages(lock)
        assert set(locked) == set(manifest_archs(manifest)), lock
        for arch, packages in locked.items():
            assert set(packages) == wanted, (
                f"{lock} {arch}: lock has {sorted(set(packages) ^ wanted)} beyond/short of {manifest}"
            )


def test_image_packages_equal_the_manifest(image: Image) -> None:
    records = status_records(image)
    assert set(records) == all_manifest_packages()
    for name, fields in records.items():
        assert fields["Package"] == name


def test_image_package_versions_match_the_lock(image: Image) -> None:
    arch = str(image.config["architecture"])
    pinned = all_locked(arch)
    for name, fields in status_records(image).items():
        assert fields["Version"] == pinned[name], (
            f"{name}: image has {fields['Version']}, lock pins {pinned[name]}"
        )
        assert fields["Architecture"] in (arch, "all")
