"""spdx_sbom builds a structurally sound SPDX 2.3 document from the image's inputs.

Structure only (IDs, relationships, purls, CPEs, determinism, errors);
validation against the SPDX model is spdx_validate.py with PyPI's spdx-tools.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from image.sbom import spdx_sbom

TESTDATA = Path(__file__).parent / "testdata"
LOCK = TESTDATA / "lock.json"
PATCHLEVEL = TESTDATA / "runtime" / "include" / "python3.13" / "patchlevel.h"

FACTS: dict[str, Any] = {
    "project": {
        "name": "cephaloproxy",
        "source_url": "https://github.com/cephaloproxy/cephaloproxy",
        "license": "GPL-2.0-or-later",
        "supplier": "CephaloProxy",
    },
    "squid": {
        "version": "7.7",
        "sha256": "e3bd613b91b1c498ec2992276063342a85cd6edddd5521294e04f44bc055da9b",
        "urls": [
            "https://github.com/squid-cache/squid/releases/download/SQUID_7_7/squid-7.7.tar.xz",
            "https://deb.debian.org/debian/pool/main/s/squid/squid_7.7.orig.tar.xz",
        ],
        "configure_flags": ["--with-openssl", "--enable-ssl-crtd"],
        "make_args": ["DEFAULT_MIME_TABLE=/usr/share/squid/mime.conf"],
    },
    "python": {"version_info": "3.13.9", "interpreter": "/usr/bin/python3"},
}


def generate(
    tmp_path: Path,
    facts: dict[str, Any] = FACTS,
    arch: str = "amd64",
    stamp: str | None = None,
    patchlevel: Path | None = PATCHLEVEL,
    name: str = "sbom.spdx.json",
) -> Path:
    facts_file = tmp_path / (name + ".facts.json")
    facts_file.write_text(json.dumps(facts))
    output = tmp_path / name
    argv = [
        "--lock",
        str(LOCK),
        "--arch",
        arch,
        "--facts",
        str(facts_file),
        "--output",
        str(output),
    ]
    if patchlevel:
        argv += ["--python-patchlevel", str(patchlevel)]
    if stamp is not None:
        stamp_file = tmp_path / (name + ".stamp")
        stamp_file.write_text(stamp)
        argv += ["--stamp", str(stamp_file)]
    assert spdx_sbom.main(argv) == 0
    return output


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in document["packages"]}


def refs(package: dict[str, Any], kind: str) -> list[str]:
    return [
        r["referenceLocator"] for r in package.get("externalRefs", []) if r["referenceType"] == kind
    ]


def test_document_header(tmp_path: Path) -> None:
    document = load(generate(tmp_path))
    assert document["spdxVersion"] == "SPDX-2.3"
    assert document["dataLicense"] == "CC0-1.0"
    assert document["SPDXID"] == "SPDXRef-DOCUMENT"
    assert document["creationInfo"]["created"] == "1970-01-01T00:00:00Z"
    assert any(c.startswith("Tool: ") for c in document["creationInfo"]["creators"])
    assert document["documentNamespace"].startswith(
        "https://github.com/cephaloproxy/cephaloproxy/spdx/cephaloproxy-0.0.0-unstamped-linux-amd64-"
    )


def test_packages_of_the_arch_only_with_versions_hashes_and_purls(tmp_path: Path) -> None:
    packages = by_name(load(generate(tmp_path)))
    assert set(packages) == {"cephaloproxy", "libstdc++6", "tzdata", "squid", "python"}
    libstdcxx = packages["libstdc++6"]
    assert libstdcxx["versionInfo"] == "14.2.0-19"
    assert libstdcxx["checksums"] == [
        {"algorithm": "SHA256", "checksumValue": "1" * 64}
    ]  # amd64's, not arm64's
    assert refs(libstdcxx, "purl") == [
        "pkg:deb/debian/libstdc%2B%2B6@14.2.0-19?arch=amd64&distro=debian-13"
    ]
    # Arch-independent packages say "all", as their status records do.
    assert refs(packages["tzdata"], "purl") == [
        "pkg:deb/debian/tzdata@2026f-0%2Bdeb13u1?arch=all&distro=debian-13"
    ]
    assert packages["tzdata"]["packageFileName"] == "tzdata_2026f-0+deb13u1_all.deb"
    assert packages["tzdata"]["downloadLocation"].startswith("https://snapshot.debian.org/")


def test_other_arch(tmp_path: Path) -> None:
    packages = by_name(load(generate(tmp_path, arch="arm64")))
    assert set(packages) == {"cephaloproxy", "libstdc++6", "squid", "python"}
    assert refs(packages["libstdc++6"], "purl") == [
        "pkg:deb/debian/libstdc%2B%2B6@14.2.0-19?arch=arm64&distro=debian-13"
    ]


def test_squid_from_the_facts(tmp_path: Path) -> None:
    squid = by_name(load(generate(tmp_path)))["squid"]
    assert squid["versionInfo"] == "7.7"
    assert squid["checksums"][0]["checksumValue"] == FACTS["squid"]["sha256"]
    assert squid["downloadLocation"] == FACTS["squid"]["urls"][0]
    assert refs(squid, "purl") == ["pkg:generic/squid@7.7"]
    assert refs(squid, "cpe23Type") == ["cpe:2.3:a:squid-cache:squid:7.7:*:*:*:*:*:*:*"]
    assert "--with-openssl --enable-ssl-crtd" in squid["comment"]
    assert "DEFAULT_MIME_TABLE=/usr/share/squid/mime.conf" in squid["comment"]


def test_python_version_from_patchlevel_and_provider(tmp_path: Path) -> None:
    python = by_name(load(generate(tmp_path)))["python"]
    assert python["versionInfo"] == "3.13.9"
    assert refs(python, "purl") == ["pkg:generic/python@3.13.9"]
    assert refs(python, "cpe23Type") == ["cpe:2.3:a:python:python:3.13.9:*:*:*:*:*:*:*"]


def test_python_version_from_either_source_alone(tmp_path: Path) -> None:
    only_files = dict(FACTS, python={"version_info": ""})
    assert (
        by_name(load(generate(tmp_path, facts=only_files, name="a.json")))["python"]["versionInfo"]
        == "3.13.9"
    )
    only_provider = dict(FACTS, python={"version_info": "3.13.7"})
    assert (
        by_name(load(generate(tmp_path, facts=only_provider, patchlevel=None, name="b.json")))[
            "python"
        ]["versionInfo"]
        == "3.13.7"
    )


def run_failing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    facts: dict[str, Any],
    arch: str = "amd64",
    patchlevel: Path | None = PATCHLEVEL,
    stamp: str | None = None,
) -> str:
    facts_file = tmp_path / "facts.json"
    facts_file.write_text(json.dumps(facts))
    output = tmp_path / "out.spdx.json"
    argv = [
        "--lock",
        str(LOCK),
        "--arch",
        arch,
        "--facts",
        str(facts_file),
        "--output",
        str(output),
    ]
    if patchlevel:
        argv += ["--python-patchlevel", str(patchlevel)]
    if stamp is not None:
        (tmp_path / "stamp").write_text(stamp)
        argv += ["--stamp", str(tmp_path / "stamp")]
    assert spdx_sbom.main(argv) == 1
    assert not output.exists() and not (tmp_path / "out.spdx.json.partial").exists()
    return capsys.readouterr().err


def test_python_versions_that_disagree_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = run_failing(tmp_path, capsys, dict(FACTS, python={"version_info": "3.13.8"}))
    assert "3.13.8" in err and "3.13.9" in err and "patchlevel.h" in err


def test_no_exact_python_version_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_failing(tmp_path, capsys, dict(FACTS, python={"version_info": ""}), patchlevel=None)
    assert "no exact Python version" in err


def test_unknown_arch_fails_naming_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = run_failing(tmp_path, capsys, FACTS, arch="riscv64")
    assert "riscv64" in err and str(LOCK) in err


def test_bad_stamp_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "created=" in run_failing(tmp_path, capsys, FACTS, stamp="created=yesterday\n")
    assert "expected one of" in run_failing(tmp_path, capsys, FACTS, stamp="colour=blue\n")


def test_relationships_describe_the_project_which_contains_the_rest(tmp_path: Path) -> None:
    document = load(generate(tmp_path))
    ids = [p["SPDXID"] for p in document["packages"]]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"SPDXRef-[A-Za-z0-9.-]+", i) for i in ids)
    top = by_name(document)["cephaloproxy"]["SPDXID"]
    describes = [r for r in document["relationships"] if r["relationshipType"] == "DESCRIBES"]
    assert describes == [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": top,
        }
    ]
    contained = {
        r["relatedSpdxElement"]
        for r in document["relationships"]
        if r["relationshipType"] == "CONTAINS" and r["spdxElementId"] == top
    }
    assert contained == set(ids) - {top}


def test_unstamped_builds_are_byte_identical(tmp_path: Path) -> None:
    first = generate(tmp_path, name="one.json").read_bytes()
    second = generate(tmp_path, name="two.json", stamp="version=0.0.0-unstamped\n").read_bytes()
    assert first == second


def test_stamped_version_revision_and_time(tmp_path: Path) -> None:
    unstamped = load(generate(tmp_path, name="u.json"))
    stamped = load(
        generate(
            tmp_path,
            name="s.json",
            stamp="version=0.1.0-abcdef123456\nrevision=abcdef1234567890\ncreated=2026-11-30T12:00:00Z\n",
        )
    )
    top = by_name(stamped)["cephaloproxy"]
    assert top["versionInfo"] == "0.1.0-abcdef123456"
    assert refs(top, "purl") == ["pkg:github/cephaloproxy/cephaloproxy@0.1.0-abcdef123456"]
    assert (
        top["downloadLocation"]
        == "git+https://github.com/cephaloproxy/cephaloproxy@abcdef1234567890"
    )
    assert stamped["creationInfo"]["created"] == "2026-11-30T12:00:00Z"
    assert stamped["documentNamespace"] != unstamped["documentNamespace"]
    assert "0.1.0-abcdef123456" in stamped["documentNamespace"]


def test_a_changed_input_changes_the_namespace(tmp_path: Path) -> None:
    one = load(generate(tmp_path, name="one.json"))
    other = load(
        generate(
            tmp_path, name="two.json", facts=dict(FACTS, squid=dict(FACTS["squid"], version="7.8"))
        )
    )
    assert one["documentNamespace"] != other["documentNamespace"]


def test_no_repository_is_claimed_unless_the_builder_names_one(tmp_path: Path) -> None:
    facts = json.loads(json.dumps(FACTS))
    facts["project"]["source_url"] = ""
    document = load(generate(tmp_path, facts))
    top = document["packages"][0]
    assert top["downloadLocation"] == "NOASSERTION"
    assert "homepage" not in top and "externalRefs" not in top
    assert document["documentNamespace"].startswith("https://spdx.org/spdxdocs/spdx/cephaloproxy-")
    assert "github.com/cephaloproxy" not in json.dumps(document)
