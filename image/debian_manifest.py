"""Reads the rules_distroless manifest (trixie.yaml) and lock (trixie.lock.json),
and the dpkg status records a built image carries.

The manifest uses a small, fixed YAML shape (see trixie.yaml), so the package
and architecture lists are read line by line with the standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path

from image.layers.oci_layout import Image, iter_entries

STATUS_DIR = "/var/lib/dpkg/status.d/"


class ManifestError(Exception):
    """The manifest or lock does not have the expected shape."""


def _yaml_list(path: Path, key: str) -> list[str]:
    """Items of a top-level `key:` list of plain scalars."""
    items: list[str] = []
    inside = False
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line.startswith((" ", "-")):
            inside = line == f"{key}:"
            continue
        if inside:
            stripped = line.strip()
            if not stripped.startswith("- "):
                raise ManifestError(
                    f"{path}:{number}: expected '- item' under '{key}:', got {raw!r}"
                )
            items.append(stripped[2:].strip().strip("'\""))
    if not items:
        raise ManifestError(f"{path}: no '{key}:' list found")
    return items


def manifest_packages(path: Path) -> list[str]:
    return _yaml_list(path, "packages")


def manifest_archs(path: Path) -> list[str]:
    return _yaml_list(path, "archs")


def lock_packages(path: Path) -> dict[str, dict[str, str]]:
    """arch -> {package name: version} from the lock."""
    try:
        lock = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ManifestError(f"cannot read {path}: {error}") from error
    by_arch: dict[str, dict[str, str]] = {}
    for package in lock.get("packages", []):
        by_arch.setdefault(package["arch"], {})[package["name"]] = package["version"]
    return by_arch


def status_records(image: Image) -> dict[str, dict[str, str]]:
    """package -> fields of its /var/lib/dpkg/status.d record (what scanners read)."""
    records: dict[str, dict[str, str]] = {}
    for entry in iter_entries(image, "file"):
        if entry.path.startswith(STATUS_DIR) and not entry.path.endswith(".md5sums"):
            text = image.read_file(entry.path).decode()
            fields = dict(
                line.split(": ", 1)
                for line in text.splitlines()
                if ": " in line and not line.startswith(" ")
            )
            records[entry.path[len(STATUS_DIR) :]] = fields
    return records
