"""The SBOM matches the built image: its file in the image, every dpkg status
record, and the Squid and Python versions read from the binaries in the layers."""

from __future__ import annotations

import json
import os
import posixpath
import re
from pathlib import Path
from typing import Any

import pytest

from image.built_image import built_image_or_skip
from image.debian_manifest import status_records
from image.layers.oci_layout import Image, find_runfile

SBOM_IN_IMAGE = "/usr/share/doc/cephaloproxy/cephaloproxy.spdx.json"


@pytest.fixture(scope="module")
def image() -> Image:
    return built_image_or_skip()


@pytest.fixture(scope="module")
def sbom_bytes() -> bytes:
    raw = os.environ.get("CEPHALOPROXY_IMAGE_SBOM")
    path = find_runfile(raw) if raw else Path("bazel-bin/image/sbom.spdx.json")
    if not path.is_file():
        pytest.skip("no built SBOM: run under Bazel or after `bazel build //image:sbom`")
    return path.read_bytes()


@pytest.fixture(scope="module")
def packages(sbom_bytes: bytes) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in json.loads(sbom_bytes)["packages"]}


def purls(package: dict[str, Any]) -> list[str]:
    # The project package has no external refs unless --//image/labels:source names its home.
    return [
        r["referenceLocator"]
        for r in package.get("externalRefs", [])
        if r["referenceType"] == "purl"
    ]


def test_the_image_carries_the_built_sbom(image: Image, sbom_bytes: bytes) -> None:
    assert image.read_file(SBOM_IN_IMAGE) == sbom_bytes


def test_every_status_record_is_in_the_sbom_with_its_version(
    image: Image, packages: dict[str, dict[str, Any]]
) -> None:
    records = status_records(image)
    assert records, "no /var/lib/dpkg/status.d records in the image"
    debs = {
        name: p for name, p in packages.items() if any(u.startswith("pkg:deb/") for u in purls(p))
    }
    assert set(debs) == set(records)
    for name, fields in records.items():
        assert debs[name]["versionInfo"] == fields["Version"], name
        assert f"?arch={fields['Architecture']}&" in purls(debs[name])[0], (
            name,
            fields["Architecture"],
            purls(debs[name]),
        )


def test_squid_version_is_the_binarys(image: Image, packages: dict[str, dict[str, Any]]) -> None:
    binary = image.read_file("/usr/sbin/squid")
    # APP_FULLNAME, "squid/<VERSION>", the string Squid reports in its headers.
    versions = set(re.findall(rb"\0squid/(\d+\.\d+(?:\.\d+)?)\0", binary))
    assert len(versions) == 1, (
        f"expected one squid/<version> string in /usr/sbin/squid, found {versions}"
    )
    assert packages["squid"]["versionInfo"] == versions.pop().decode()


def test_python_version_is_the_interpreters(
    image: Image, packages: dict[str, dict[str, Any]]
) -> None:
    version = packages["python"]["versionInfo"]
    major_minor = ".".join(version.split(".")[:2])
    real = image.resolve("/usr/bin/python3")
    assert real is not None and posixpath.basename(real) == f"python{major_minor}", real
    assert image.resolve(f"/usr/lib/python{major_minor}/os.py") is not None, (
        f"no stdlib for Python {major_minor}"
    )
    # PY_VERSION as a C string, in libpython when the interpreter links it
    # (python-build-standalone), else in the interpreter itself.
    library = image.resolve(f"/usr/lib/libpython{major_minor}.so.1.0")
    binary = image.read_file(library or real)
    found = set(
        re.findall(rb"\0(" + re.escape(major_minor.encode()) + rb"\.\d+[a-z0-9]*)\0", binary)
    )
    assert found == {version.encode()}, f"{library or real} says {found}, the SBOM {version}"
