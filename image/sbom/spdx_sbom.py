"""Writes the image's SPDX 2.3 JSON SBOM from the files the build made the image from.

Run by the `spdx_sbom` rule (image/sbom/defs.bzl), never by hand, so the SBOM
cannot drift from the image:
  --lock      image/trixie.lock.json: every Debian package of --arch (name,
              version, architecture, .deb sha256 and URL)
  --facts     JSON the rule writes from the same Starlark constants that build
              the rest: the project (name, source, licence), Squid
              (squid/version.bzl, squid/configure_flags.bzl) and the resolved
              Python toolchain (interpreter_version_info, interpreter name)
  --python-patchlevel  the toolchain's include/python3.X/patchlevel.h, the
              interpreter's own PY_VERSION (checked against the facts)
  --stamp     key=value lines from the workspace status (version, revision,
              created), or their fixed unstamped values
The document DESCRIBES the project's package, which CONTAINS every other one.
Unstamped builds are reproducible: created is 1970-01-01T00:00:00Z and the
documentNamespace is derived from the document's own content.
Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any

DEBIAN_DISTRO = "debian-13"
UNSTAMPED = {
    "version": "0.0.0-unstamped",
    "revision": "unstamped-revision",
    "created": "1970-01-01T00:00:00Z",
}
TOOL = "spdx_sbom.py (CephaloProxy, image/sbom)"


class SbomError(Exception):
    """An input is missing or inconsistent; the message names the file and the fix."""


def spdx_id(kind: str, name: str) -> str:
    """SPDXRef-<kind>-<name> with only the characters SPDX allows ([A-Za-z0-9.-])."""
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]", "-", f"{kind}-{name}")


def purl_quote(value: str) -> str:
    """Percent-encoding for purl name and version segments ('+' -> %2B, '~' kept)."""
    return urllib.parse.quote(value, safe=".-_~")


def external_refs(purl: str, cpe: str | None = None) -> list[dict[str, str]]:
    """A purl (what package managers and Trivy match) and a CPE (what NVD-based
    scanners such as Grype match)."""
    refs = [
        {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}
    ]
    if cpe:
        refs.append(
            {"referenceCategory": "SECURITY", "referenceType": "cpe23Type", "referenceLocator": cpe}
        )
    return refs


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SbomError(f"cannot read {path}: {error}") from error


def debian_packages(lock_path: Path, arch: str) -> list[dict[str, Any]]:
    """The lock's packages for one architecture, sorted by name."""
    lock = read_json(lock_path)
    found = [p for p in lock.get("packages", []) if p.get("arch") == arch]
    if not found:
        archs = sorted({str(p.get("arch")) for p in lock.get("packages", [])})
        raise SbomError(
            f"{lock_path} has no packages for arch {arch!r} (it has {archs}); refresh the lock with `bazel run @trixie//:lock`"
        )
    for package in found:
        missing = [key for key in ("name", "version", "sha256", "urls") if not package.get(key)]
        if missing:
            raise SbomError(
                f"{lock_path}: package {package.get('name', '?')} ({arch}) lacks {', '.join(missing)}"
            )
    return sorted(found, key=lambda p: str(p["name"]))


def deb_architecture(package: dict[str, Any], arch: str) -> str:
    """The .deb's own architecture: 'all' for arch-independent packages
    (what dpkg's status records and scanners say), else the image's."""
    filename = str(package["urls"][0]).rsplit("/", 1)[-1]
    match = re.fullmatch(r".+_([a-z0-9]+)\.deb", filename)
    return match.group(1) if match else arch


def debian_package(package: dict[str, Any], arch: str) -> dict[str, Any]:
    name, version = str(package["name"]), str(package["version"])
    architecture = deb_architecture(package, arch)
    purl = f"pkg:deb/debian/{purl_quote(name)}@{purl_quote(version)}?arch={architecture}&distro={DEBIAN_DISTRO}"
    return {
        "SPDXID": spdx_id("deb", f"{name}-{architecture}"),
        "name": name,
        "versionInfo": version,
        "packageFileName": str(package["urls"][0]).rsplit("/", 1)[-1],
        "supplier": "Organization: Debian",
        "downloadLocation": str(package["urls"][0]),
        "filesAnalyzed": False,
        "checksums": [{"algorithm": "SHA256", "checksumValue": str(package["sha256"])}],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "externalRefs": external_refs(purl),
        "comment": f"Debian 13 (trixie) package, {architecture}, pinned by image/trixie.lock.json; status record /var/lib/dpkg/status.d/{name}",
    }


def squid_package(squid: dict[str, Any]) -> dict[str, Any]:
    version = str(squid["version"])
    urls = [str(u) for u in squid["urls"]]
    flags = " ".join(str(f) for f in squid.get("configure_flags", []))
    make_args = " ".join(str(a) for a in squid.get("make_args", []))
    return {
        "SPDXID": spdx_id("Package", "squid"),
        "name": "squid",
        "versionInfo": version,
        "packageFileName": urls[0].rsplit("/", 1)[-1],
        "supplier": "Organization: The Squid Software Foundation",
        "downloadLocation": urls[0],
        "homepage": "https://www.squid-cache.org/",
        "filesAnalyzed": False,
        "checksums": [{"algorithm": "SHA256", "checksumValue": str(squid["sha256"])}],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "GPL-2.0-or-later",
        "copyrightText": "NOASSERTION",
        "sourceInfo": "compiled from the release tarball by //squid (rules_foreign_cc configure_make); checksum is the tarball's",
        "externalRefs": external_refs(
            f"pkg:generic/squid@{purl_quote(version)}",
            f"cpe:2.3:a:squid-cache:squid:{version}:*:*:*:*:*:*:*",
        ),
        "comment": f"/usr/sbin/squid, /usr/lib/squid. ./configure --prefix=/usr {flags}; make {make_args}".rstrip(),
    }


def patchlevel_version(path: Path) -> str:
    """PY_VERSION from CPython's patchlevel.h, e.g. '3.13.9'."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise SbomError(f"cannot read {path}: {error}") from error
    match = re.search(r'^#define\s+PY_VERSION\s+"([^"]+)"', text, re.M)
    if not match:
        raise SbomError(
            f"{path} has no '#define PY_VERSION \"X.Y.Z\"' line; is it CPython's patchlevel.h?"
        )
    return match.group(1)


def python_version(python: dict[str, Any], patchlevel: Path | None) -> str:
    """The toolchain's exact version; its files and its provider must agree."""
    declared = str(python.get("version_info") or "")
    from_files = patchlevel_version(patchlevel) if patchlevel else ""
    if declared and from_files and declared != from_files:
        raise SbomError(
            f"the Python toolchain says {declared} (interpreter_version_info) but {patchlevel} says {from_files}; "
            "the toolchain definition is inconsistent"
        )
    version = from_files or declared
    if not re.fullmatch(r"\d+\.\d+\.\d+([a-z]+\d+)?\+?", version):
        raise SbomError(
            "no exact Python version: the resolved toolchain has neither interpreter_version_info nor "
            f"include/python3.X/patchlevel.h in its files (got {version!r}); register an in-build runtime "
            "(rules_python's python.toolchain)"
        )
    return version


def python_package(python: dict[str, Any], version: str) -> dict[str, Any]:
    return {
        "SPDXID": spdx_id("Package", "python"),
        "name": "python",
        "versionInfo": version,
        "supplier": "Organization: Python Software Foundation",
        "downloadLocation": str(python.get("download_location") or "NOASSERTION"),
        "homepage": "https://www.python.org/",
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "PSF-2.0",
        "copyrightText": "NOASSERTION",
        "externalRefs": external_refs(
            f"pkg:generic/python@{purl_quote(version)}",
            f"cpe:2.3:a:python:python:{version}:*:*:*:*:*:*:*",
        ),
        "comment": f"CPython of the resolved rules_python toolchain: {python.get('interpreter', '/usr/bin/python3')} and its standard library",
    }


def read_stamp(path: Path | None) -> dict[str, str]:
    """version, revision, created from key=value lines; unstamped values otherwise."""
    values = dict(UNSTAMPED)
    if path is None:
        return values
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SbomError(f"cannot read {path}: {error}") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or key.strip() not in UNSTAMPED:
            raise SbomError(
                f"{path}:{number}: expected one of {sorted(UNSTAMPED)} as key=value, got {line!r}"
            )
        values[key.strip()] = value.strip()
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", values["created"]):
        raise SbomError(f"{path}: created={values['created']!r} is not YYYY-MM-DDTHH:MM:SSZ (UTC)")
    return values


def project_package(project: dict[str, Any], stamp: dict[str, str]) -> dict[str, Any]:
    # Empty unless the builder names its repository (--//image/labels:source).
    source = str(project.get("source_url") or "")
    package: dict[str, Any] = {
        "SPDXID": spdx_id("Package", str(project["name"])),
        "name": str(project["name"]),
        "versionInfo": stamp["version"],
        "supplier": f"Organization: {project.get('supplier', 'CephaloProxy')}",
        "downloadLocation": download_location(source, stamp),
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": str(project.get("license", "NOASSERTION")),
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "comment": f"The container image: entrypoint, health check and configuration from revision {stamp['revision']}",
    }
    if source:
        package["homepage"] = source
        host, owner_repo = (
            urllib.parse.urlparse(source).netloc,
            urllib.parse.urlparse(source).path.strip("/"),
        )
        purl_type = "github" if host == "github.com" else "generic"
        package["externalRefs"] = external_refs(
            f"pkg:{purl_type}/{owner_repo}@{purl_quote(stamp['version'])}"
        )
    return package


def download_location(source: str, stamp: dict[str, str]) -> str:
    """The project's download location: its repository at the revision, when the builder named one."""
    if not source:
        return "NOASSERTION"
    return (
        f"git+{source}@{stamp['revision']}"
        if stamp["revision"] != UNSTAMPED["revision"]
        else source
    )


def build_document(
    lock: Path, arch: str, facts: dict[str, Any], patchlevel: Path | None, stamp: dict[str, str]
) -> dict[str, Any]:
    try:
        project, squid, python = facts["project"], facts["squid"], facts["python"]
    except KeyError as error:
        raise SbomError(f"facts lack {error}; they are written by image/sbom/defs.bzl") from error
    top = project_package(project, stamp)
    contained = [debian_package(p, arch) for p in debian_packages(lock, arch)]
    contained += [squid_package(squid), python_package(python, python_version(python, patchlevel))]
    ids = [p["SPDXID"] for p in contained]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SbomError(f"{lock}: packages listed twice for {arch}: {duplicates}")
    name = f"{project['name']}-{stamp['version']}-linux-{arch}"
    document: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": "",
        "creationInfo": {
            "created": stamp["created"],
            "creators": [
                f"Tool: {TOOL}",
                f"Organization: {project.get('supplier', 'CephaloProxy')}",
            ],
            "comment": f"Generated by the Bazel build of {project.get('source_url') or project['name']} (revision {stamp['revision']}) from image/trixie.lock.json, squid/version.bzl and the resolved Python toolchain.",
        },
        "packages": [top] + contained,
        "relationships": [
            {
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": top["SPDXID"],
            }
        ]
        + [
            {
                "spdxElementId": top["SPDXID"],
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": i,
            }
            for i in ids
        ],
    }
    # Same content, same namespace: reproducible, and unique per version and package set.
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
    # SPDX's own namespace base when the builder names no repository of its own.
    base = str(project.get("source_url") or "https://spdx.org/spdxdocs").rstrip("/")
    document["documentNamespace"] = f"{base}/spdx/{name}-{digest[:32]}"
    return document


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument(
        "--arch", required=True, help="Debian architecture of the image: amd64, arm64"
    )
    parser.add_argument("--facts", type=Path, required=True)
    parser.add_argument("--python-patchlevel", type=Path)
    parser.add_argument("--stamp", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        document = build_document(
            args.lock,
            args.arch,
            read_json(args.facts),
            args.python_patchlevel,
            read_stamp(args.stamp),
        )
        temporary = args.output.with_name(args.output.name + ".partial")
        temporary.write_text(
            json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8"
        )
        temporary.replace(args.output)
    except (SbomError, OSError) as error:
        print(f"spdx_sbom: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
