"""The spdx_sbom and cyclonedx_sbom rules wire the lock, the facts and the runtime's patchlevel.h into the generators."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def document() -> dict[str, object]:
    raw = os.environ.get("CEPHALOPROXY_TEST_SBOM")
    if not raw:
        pytest.skip("run under Bazel: bazel test //image/sbom:spdx_sbom_rule_test")
    return json.loads(Path(raw).read_text())


def test_rule_output_describes_lock_squid_and_the_runtime(document: dict[str, object]) -> None:
    listed = document["packages"]
    assert isinstance(listed, list), document
    packages = {p["name"]: p for p in listed}
    assert sorted(packages) == ["cephaloproxy", "libstdc++6", "python", "squid", "tzdata"]
    # patchlevel.h of the runtime's files, found by the rule.
    assert packages["python"]["versionInfo"] == "3.13.9"
    assert packages["squid"]["versionInfo"] == "7.7"
    assert "--with-openssl" in packages["squid"]["comment"]
    assert packages["cephaloproxy"]["versionInfo"] == "0.0.0-unstamped"
    creation = document["creationInfo"]
    assert isinstance(creation, dict), document
    assert creation["created"] == "1970-01-01T00:00:00Z"


def test_the_cyclonedx_rule_describes_the_same_packages() -> None:
    raw = os.environ.get("CEPHALOPROXY_TEST_SBOM_CYCLONEDX")
    if not raw:
        pytest.skip("run under Bazel: bazel test //image/sbom:spdx_sbom_rule_test")
    document = json.loads(Path(raw).read_text())
    assert raw.endswith(".cdx.json") and document["specVersion"] == "1.6"
    components = {c["name"]: c for c in document["components"]}
    assert sorted(components) == ["libstdc++6", "python", "squid", "tzdata"]
    assert components["python"]["version"] == "3.13.9"
    # Squid's names come from //squid:version.bzl through the rule's defaults.
    assert components["squid"]["cpe"] == "cpe:2.3:a:squid-cache:squid:7.7:*:*:*:*:*:*:*"
    assert components["squid"]["purl"] == "pkg:generic/squid-cache/squid@7.7"
