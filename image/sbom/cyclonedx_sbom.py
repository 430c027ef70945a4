"""Writes the image's CycloneDX 1.6 JSON SBOM from the inventory of the build's inputs (inventory.py).

Run by the `cyclonedx_sbom` rule (image/sbom/defs.bzl) with inventory.run's arguments, beside
the SPDX one from the same inventory. metadata.component is the image; `components` lists
what it contains (Debian packages as libraries, Squid and CPython as applications, each with
its purl and, where NVD has one, its CPE 2.3), and the image depends on all of them. Downloads
are externalReferences with their SHA-256 (a .deb: "distribution"; Squid's release tarball:
"source-distribution"), since those hashes are of the download, not of the installed files.
Unstamped builds are reproducible: the serialNumber is a UUID derived from the content.
Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from typing import Any

from image.sbom.inventory import Component, Inventory, run

SPEC_VERSION = "1.6"
TOOL_NAME = "cyclonedx_sbom.py"


def external_references(component: Component) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = []
    if component.download_url:
        kind = "source-distribution" if component.download_is_source else "distribution"
        if component.kind == "container":
            kind = "vcs"
        ref: dict[str, Any] = {"type": kind, "url": component.download_url}
        if component.download_sha256:
            ref["hashes"] = [{"alg": "SHA-256", "content": component.download_sha256}]
        refs.append(ref)
    if component.homepage and component.homepage != component.download_url:
        refs.append({"type": "website", "url": component.homepage})
    return refs


def component_entry(component: Component) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": component.kind,
        "bom-ref": component.ref,
        "supplier": {"name": component.supplier},
        "name": component.name,
        "version": component.version,
        "description": component.comment,
    }
    if component.license:
        entry["licenses"] = [{"expression": component.license}]
    if component.cpe:
        entry["cpe"] = component.cpe
    if component.purl:
        entry["purl"] = component.purl
    refs = external_references(component)
    if refs:
        entry["externalReferences"] = refs
    if component.source_info:
        entry["properties"] = [{"name": "cephaloproxy:sourceInfo", "value": component.source_info}]
    return entry


def document(inventory: Inventory) -> dict[str, Any]:
    top = component_entry(inventory.project)
    contained = [component_entry(c) for c in inventory.contained]
    result: dict[str, Any] = {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": "",
        "version": 1,
        "metadata": {
            "timestamp": inventory.created,
            "lifecycles": [{"phase": "build"}],
            "tools": {
                "components": [
                    {
                        "type": "application",
                        "name": TOOL_NAME,
                        "group": "CephaloProxy",
                        "description": "image/sbom, from image/trixie.lock.json, squid/version.bzl and the resolved Python toolchain",
                    }
                ]
            },
            "component": top,
            "supplier": {"name": inventory.supplier},
            "properties": [
                {"name": "cephaloproxy:revision", "value": inventory.revision},
                {"name": "cephaloproxy:architecture", "value": inventory.arch},
            ],
        },
        "components": contained,
        "dependencies": [{"ref": top["bom-ref"], "dependsOn": [c["bom-ref"] for c in contained]}]
        + [{"ref": c["bom-ref"]} for c in contained],
    }
    # Same content, same serial number: reproducible, and unique per version and package set.
    digest = hashlib.sha256(json.dumps(result, sort_keys=True).encode()).digest()
    result["serialNumber"] = uuid.UUID(bytes=digest[:16], version=5).urn
    return result


def main(argv: list[str]) -> int:
    return run(argv, __doc__.splitlines()[0], document, "cyclonedx_sbom")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
