"""cyclonedx_sbom builds a CycloneDX 1.6 document that names everything as the SPDX one does.

Structure and agreement with spdx_sbom (same inventory: same names, versions, purls, CPEs);
validation against the CycloneDX schema is cyclonedx_validate.py with PyPI's
cyclonedx-python-lib (.ci/run).
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from image.sbom import cyclonedx_sbom, spdx_sbom
from image.sbom.spdx_sbom_test import FACTS, LOCK, PATCHLEVEL

SERIAL = re.compile(
    r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
)


def run_both(
    directory: Path,
    facts: dict[str, Any] = FACTS,
    lock: Path = LOCK,
    arch: str = "amd64",
    stamp: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(CycloneDX, SPDX) documents from the same inputs."""
    facts_file = directory / "facts.json"
    facts_file.write_text(json.dumps(facts))
    argv = [
        "--lock",
        str(lock),
        "--arch",
        arch,
        "--facts",
        str(facts_file),
        "--python-patchlevel",
        str(PATCHLEVEL),
    ]
    if stamp is not None:
        (directory / "stamp").write_text(stamp)
        argv += ["--stamp", str(directory / "stamp")]
    assert cyclonedx_sbom.main(argv + ["--output", str(directory / "sbom.cdx.json")]) == 0
    assert spdx_sbom.main(argv + ["--output", str(directory / "sbom.spdx.json")]) == 0
    return json.loads((directory / "sbom.cdx.json").read_text()), json.loads(
        (directory / "sbom.spdx.json").read_text()
    )


def cdx_by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in document["components"]}


def spdx_names(package: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
    refs = {r["referenceType"]: r["referenceLocator"] for r in package.get("externalRefs", [])}
    return package["name"], package["versionInfo"], refs.get("purl"), refs.get("cpe23Type")


def cdx_names(component: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
    return component["name"], component["version"], component.get("purl"), component.get("cpe")


def test_header_and_the_image_as_metadata_component(tmp_path: Path) -> None:
    document, _ = run_both(tmp_path)
    assert (document["bomFormat"], document["specVersion"], document["version"]) == (
        "CycloneDX",
        "1.6",
        1,
    )
    assert SERIAL.fullmatch(document["serialNumber"]), document["serialNumber"]
    assert document["metadata"]["timestamp"] == "1970-01-01T00:00:00Z"
    top = document["metadata"]["component"]
    assert (top["type"], top["name"], top["version"]) == (
        "container",
        "cephaloproxy",
        "0.0.0-unstamped",
    )
    assert top["licenses"] == [{"expression": "GPL-2.0-or-later"}]


def test_components_name_everything_exactly_as_the_spdx_document(tmp_path: Path) -> None:
    cdx, spdx = run_both(tmp_path)
    spdx_contained = sorted(spdx_names(p) for p in spdx["packages"][1:])
    assert sorted(cdx_names(c) for c in cdx["components"]) == spdx_contained
    assert cdx_names(cdx["metadata"]["component"]) == spdx_names(spdx["packages"][0])


def test_squid_and_python_carry_cpe_and_purl(tmp_path: Path) -> None:
    components = cdx_by_name(run_both(tmp_path)[0])
    squid, python = components["squid"], components["python"]
    assert (squid["cpe"], squid["purl"]) == (FACTS["squid"]["cpe"], FACTS["squid"]["purl"])
    assert (python["version"], python["purl"], python["cpe"]) == (
        "3.13.9",
        "pkg:generic/python@3.13.9",
        "cpe:2.3:a:python:python:3.13.9:*:*:*:*:*:*:*",
    )
    # The tarball's hash belongs to the source download, not to the installed binaries.
    assert squid["externalReferences"][0] == {
        "type": "source-distribution",
        "url": FACTS["squid"]["urls"][0],
        "hashes": [{"alg": "SHA-256", "content": FACTS["squid"]["sha256"]}],
    }
    assert "hashes" not in squid


def test_debian_packages_are_libraries_with_deb_purls_and_their_deb_hash(tmp_path: Path) -> None:
    libstdcxx = cdx_by_name(run_both(tmp_path)[0])["libstdc++6"]
    assert libstdcxx["type"] == "library"
    assert (
        libstdcxx["purl"] == "pkg:deb/debian/libstdc%2B%2B6@14.2.0-19?arch=amd64&distro=debian-13"
    )
    assert libstdcxx["externalReferences"][0]["type"] == "distribution"
    assert libstdcxx["externalReferences"][0]["hashes"] == [{"alg": "SHA-256", "content": "1" * 64}]


def test_the_image_depends_on_every_component_and_refs_are_unique(tmp_path: Path) -> None:
    document, _ = run_both(tmp_path)
    refs = [document["metadata"]["component"]["bom-ref"]] + [
        c["bom-ref"] for c in document["components"]
    ]
    assert len(refs) == len(set(refs))
    top = document["dependencies"][0]
    assert top["ref"] == refs[0] and top["dependsOn"] == refs[1:]


def test_unstamped_is_reproducible_and_stamps_change_the_serial(tmp_path: Path) -> None:
    for name in "abc":
        (tmp_path / name).mkdir()
    first, _ = run_both(tmp_path / "a")
    second, _ = run_both(tmp_path / "b")
    stamped, _ = run_both(
        tmp_path / "c", stamp="version=0.1.0\nrevision=abc\ncreated=2026-11-30T12:00:00Z\n"
    )
    assert first == second
    assert stamped["serialNumber"] != first["serialNumber"]
    assert stamped["metadata"]["component"]["purl"] == "pkg:github/cephaloproxy/cephaloproxy@0.1.0"


def test_a_squid_cpe_for_another_release_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = dict(FACTS, squid=dict(FACTS["squid"], version="7.8"))
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    output = tmp_path / "out.cdx.json"
    argv = [
        "--lock",
        str(LOCK),
        "--arch",
        "amd64",
        "--facts",
        str(tmp_path / "facts.json"),
        "--output",
        str(output),
    ]
    assert cyclonedx_sbom.main(argv + ["--python-patchlevel", str(PATCHLEVEL)]) == 1
    assert "SQUID_CPE" in capsys.readouterr().err and not output.exists()


# Debian package names and versions as policy allows them ([a-z0-9+.-], epochs, tildes, pluses).
_DEB_NAMES = st.text(
    string.ascii_lowercase + string.digits + "+.-", min_size=1, max_size=20
).filter(lambda n: n[0].isalnum())
_DEB_VERSIONS = st.text(
    string.ascii_letters + string.digits + ".+~:-", min_size=1, max_size=24
).filter(lambda v: v[0].isdigit())


@given(packages=st.dictionaries(_DEB_NAMES, _DEB_VERSIONS, min_size=1, max_size=6))
def test_any_lock_gives_both_formats_the_same_names(
    tmp_path_factory: pytest.TempPathFactory, packages: dict[str, str]
) -> None:
    directory = tmp_path_factory.mktemp("lock")
    lock = directory / "lock.json"
    lock.write_text(
        json.dumps(
            {
                "packages": [
                    {
                        "arch": "amd64",
                        "name": name,
                        "version": version,
                        "sha256": "a" * 64,
                        "urls": [
                            f"https://deb.debian.org/debian/pool/main/x/{name}_{version}_amd64.deb"
                        ],
                    }
                    for name, version in packages.items()
                ]
            }
        )
    )
    cdx, spdx = run_both(directory, lock=lock)
    assert sorted(cdx_names(c) for c in cdx["components"]) == sorted(
        spdx_names(p) for p in spdx["packages"][1:]
    )
    for component in cdx["components"][: len(packages)]:
        # The purl's name and version segments are percent-encoded: nothing but its own delimiters.
        assert re.fullmatch(
            r"pkg:deb/debian/[A-Za-z0-9.%_~-]+@[A-Za-z0-9.%_~-]+\?arch=amd64&distro=debian-13",
            component["purl"],
        )
