"""What the image ships, read from the build's inputs: the core both SBOM writers format.

The SPDX writer (spdx_sbom.py) and the CycloneDX writer (cyclonedx_sbom.py) take the same
`Inventory`, so the two formats cannot disagree on a name, version, purl or CPE. Its sources:
  --lock      image/trixie.lock.json: every Debian package of --arch (name, version,
              architecture, .deb sha256 and URL)
  --facts     JSON the rule (defs.bzl) writes from the Starlark constants that build the rest:
              the project (name, source, licence), Squid (squid/version.bzl: version, hash,
              URLs, CPE, purl; squid/configure_flags.bzl) and the resolved Python toolchain
              (interpreter_version_info, interpreter path)
  --python-patchlevel  the toolchain's include/python3.X/patchlevel.h: the shipped
              interpreter's own PY_VERSION (checked against the facts)
  --stamp     key=value lines from the workspace status (version, revision, created), or
              their fixed unstamped values
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEBIAN_DISTRO = "debian-13"
UNSTAMPED = {
    "version": "0.0.0-unstamped",
    "revision": "unstamped-revision",
    "created": "1970-01-01T00:00:00Z",
}


class SbomError(Exception):
    """An input is missing or inconsistent; the message names the file and the fix."""


@dataclass(frozen=True)
class Component:
    """One thing the image ships, with the names scanners match it by."""

    ref: str  # unique in the inventory: SPDX IDs and CycloneDX bom-refs derive from it
    kind: str  # CycloneDX component type: container, application, library
    name: str
    version: str
    supplier: str
    comment: str
    purl: str | None = None
    cpe: str | None = None
    license: str | None = None  # the declared SPDX licence expression, if known
    homepage: str | None = None
    download_url: str | None = None
    download_sha256: str | None = None
    download_is_source: bool = False  # the download is the source the binaries were built from
    source_info: str | None = None


@dataclass(frozen=True)
class Inventory:
    """The project's image and everything it contains, for one architecture."""

    name: str
    arch: str
    project: Component
    contained: tuple[Component, ...]
    created: str
    revision: str
    supplier: str
    source_url: str  # the builder's repository, "" when none is claimed


def purl_quote(value: str) -> str:
    """Percent-encoding for purl name and version segments ('+' -> %2B, '~' kept)."""
    return urllib.parse.quote(value, safe=".-_~")


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


def debian_component(package: dict[str, Any], arch: str) -> Component:
    name, version = str(package["name"]), str(package["version"])
    architecture = deb_architecture(package, arch)
    return Component(
        ref=f"deb-{name}-{architecture}",
        kind="library",
        name=name,
        version=version,
        supplier="Debian",
        purl=f"pkg:deb/debian/{purl_quote(name)}@{purl_quote(version)}?arch={architecture}&distro={DEBIAN_DISTRO}",
        download_url=str(package["urls"][0]),
        download_sha256=str(package["sha256"]),
        comment=f"Debian 13 (trixie) package, {architecture}, pinned by image/trixie.lock.json; status record /var/lib/dpkg/status.d/{name}",
    )


def squid_component(squid: dict[str, Any]) -> Component:
    version = str(squid["version"])
    cpe, purl = str(squid.get("cpe") or ""), str(squid.get("purl") or "")
    # version.bzl derives both from SQUID_VERSION; a hand-edited one must not name another release.
    if f":{version}:" not in cpe or not purl.endswith(f"@{purl_quote(version)}"):
        raise SbomError(
            f"Squid's cpe {cpe!r} and purl {purl!r} must name its version {version}; set SQUID_CPE and SQUID_PURL from SQUID_VERSION in squid/version.bzl"
        )
    flags = " ".join(str(f) for f in squid.get("configure_flags", []))
    make_args = " ".join(str(a) for a in squid.get("make_args", []))
    return Component(
        ref="Package-squid",
        kind="application",
        name="squid",
        version=version,
        supplier="The Squid Software Foundation",
        purl=purl,
        cpe=cpe,
        license="GPL-2.0-or-later",
        homepage="https://www.squid-cache.org/",
        download_url=str(squid["urls"][0]),
        download_sha256=str(squid["sha256"]),
        download_is_source=True,
        source_info="compiled from the release tarball by //squid (autotools_build: configure && make); checksum is the tarball's",
        comment=f"/usr/sbin/squid, /usr/lib/squid (each program carries this cpe and purl in its .note.package). ./configure --prefix=/usr {flags}; make {make_args}".rstrip(),
    )


def patchlevel_version(path: Path) -> str:
    """PY_VERSION from CPython's patchlevel.h, e.g. '3.13.9'."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise SbomError(f"cannot read {path}: {error}") from error
    match = re.search(r'^#define\s+PY_VERSION\s+"([^"]+)"', text, re.MULTILINE)
    if not match:
        raise SbomError(
            f"{path} has no '#define PY_VERSION \"X.Y.Z\"' line; is it CPython's patchlevel.h?"
        )
    return match.group(1)


def python_version(python: dict[str, Any], patchlevel: Path | None) -> str:
    """The shipped interpreter's exact version; its files and its provider must agree."""
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


def python_component(python: dict[str, Any], version: str) -> Component:
    # The names Syft's CPython binary classifier reports, so an SBOM and a scan agree.
    return Component(
        ref="Package-python",
        kind="application",
        name="python",
        version=version,
        supplier="Python Software Foundation",
        purl=f"pkg:generic/python@{purl_quote(version)}",
        cpe=f"cpe:2.3:a:python:python:{version}:*:*:*:*:*:*:*",
        license="PSF-2.0",
        homepage="https://www.python.org/",
        download_url=str(python.get("download_location") or "") or None,
        comment=str(
            python.get("comment")
            or f"CPython of the resolved rules_python toolchain: {python.get('interpreter', '/usr/bin/python3')} and its standard library"
        ),
    )


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


def project_component(project: dict[str, Any], stamp: dict[str, str]) -> Component:
    # Empty unless the builder names its repository (--//image/labels:source).
    source = str(project.get("source_url") or "")
    purl = None
    if source:
        parsed = urllib.parse.urlparse(source)
        purl_type = "github" if parsed.netloc == "github.com" else "generic"
        purl = f"pkg:{purl_type}/{parsed.path.strip('/')}@{purl_quote(stamp['version'])}"
    return Component(
        ref=f"Package-{project['name']}",
        kind="container",
        name=str(project["name"]),
        version=stamp["version"],
        supplier=str(project.get("supplier", "CephaloProxy")),
        purl=purl,
        license=str(project.get("license") or "") or None,
        homepage=source or None,
        download_url=download_location(source, stamp),
        comment=f"The container image: entrypoint, health check and configuration from revision {stamp['revision']}",
    )


def download_location(source: str, stamp: dict[str, str]) -> str | None:
    """The project's download location: its repository at the revision, when the builder named one."""
    if not source:
        return None
    return (
        f"git+{source}@{stamp['revision']}"
        if stamp["revision"] != UNSTAMPED["revision"]
        else source
    )


def build_inventory(
    locks: Path | list[Path],
    arch: str,
    facts: dict[str, Any],
    patchlevel: Path | None,
    stamp: dict[str, str],
) -> Inventory:
    try:
        project, squid, python = facts["project"], facts["squid"], facts["python"]
    except KeyError as error:
        raise SbomError(f"facts lack {error}; they are written by image/sbom/defs.bzl") from error
    # More than one lock: the offline CI image's Debian python3.13 (image/offline/python.lock.json).
    lock_list = locks if isinstance(locks, list) else [locks]
    lock = lock_list[0]
    contained = [
        debian_component(p, arch) for each in lock_list for p in debian_packages(each, arch)
    ]
    contained += [
        squid_component(squid),
        python_component(python, python_version(python, patchlevel)),
    ]
    refs = [c.ref for c in contained]
    duplicates = sorted({r for r in refs if refs.count(r) > 1})
    if duplicates:
        raise SbomError(f"{lock}: packages listed twice for {arch}: {duplicates}")
    return Inventory(
        name=f"{project['name']}-{stamp['version']}-linux-{arch}",
        arch=arch,
        project=project_component(project, stamp),
        contained=tuple(contained),
        created=stamp["created"],
        revision=stamp["revision"],
        supplier=str(project.get("supplier", "CephaloProxy")),
        source_url=str(project.get("source_url") or ""),
    )


def run(
    argv: list[str], description: str, writer: Callable[[Inventory], dict[str, Any]], prog: str
) -> int:
    """The command line both generators share: inputs -> inventory -> writer -> --output (atomically)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--lock",
        type=Path,
        action="append",
        required=True,
        help="a Debian package lock; repeat for more",
    )
    parser.add_argument(
        "--arch", required=True, help="Debian architecture of the image: amd64, arm64"
    )
    parser.add_argument("--facts", type=Path, required=True)
    parser.add_argument("--python-patchlevel", type=Path)
    parser.add_argument("--stamp", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        inventory = build_inventory(
            args.lock,
            args.arch,
            read_json(args.facts),
            args.python_patchlevel,
            read_stamp(args.stamp),
        )
        document = writer(inventory)
        temporary = args.output.with_name(args.output.name + ".partial")
        temporary.write_text(
            json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8"
        )
        temporary.replace(args.output)
    except (SbomError, OSError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    return 0
