"""Every program //squid links carries the package note scanners identify Squid by.

Reads the `.note.package` ELF notes (https://systemd.io/ELF_PACKAGE_METADATA/) of squid, every
helper and security_file_certgen with squid/elf_check.py, and checks the JSON against the spec's
fields and the names the SBOM uses (the version comes from squid/version.bzl). Exactly one note:
a second one (Debian's cross glibc stamps its crt1.o "cross-toolchain-base") would make Syft
report the wrong package.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squid.elf_check import is_elf, package_notes
from squid.squid_under_test import SquidLayout, built_squid_or_skip, expected_arch, expected_version


@pytest.fixture(scope="module")
def layout() -> SquidLayout:
    return built_squid_or_skip()


def linked_programs(root: Path) -> list[Path]:
    """usr/sbin/squid and every ELF file in usr/lib/squid (helpers, security_file_certgen)."""
    helpers = sorted(
        path for path in (root / "usr/lib/squid").iterdir() if path.is_file() and is_elf(path)
    )
    return [root / "usr/sbin/squid", *helpers]


def expected_note() -> dict[str, str]:
    version = expected_version()
    return {
        "type": "generic",
        "name": "squid",
        "version": version,
        "architecture": expected_arch(),
        "cpe": f"cpe:2.3:a:squid-cache:squid:{version}:*:*:*:*:*:*:*",
        "purl": f"pkg:generic/squid-cache/squid@{version}",
    }


def test_the_helpers_are_all_there(layout: SquidLayout) -> None:
    names = {path.name for path in linked_programs(layout.root)}
    assert {
        "squid",
        "security_file_certgen",
        "basic_ncsa_auth",
        "digest_file_auth",
        "log_file_daemon",
        "unlinkd",
    } <= names


def test_every_linked_program_carries_exactly_the_squid_package_note(layout: SquidLayout) -> None:
    wrong = {}
    for program in linked_programs(layout.root):
        notes = package_notes(program)
        decoded = [json.loads(note) for note in notes]
        if decoded != [expected_note()]:
            wrong[str(program.relative_to(layout.root))] = notes
    assert not wrong, (
        f"expected one note {json.dumps(expected_note())} in each program; found: {wrong}"
    )


def test_the_note_has_the_package_notes_spec_fields(layout: SquidLayout) -> None:
    (note,) = package_notes(layout.root / "usr/sbin/squid")
    payload = json.loads(note)
    for field in ("type", "name", "version", "architecture", "cpe", "purl"):
        assert isinstance(payload.get(field), str) and payload[field], (
            f"{field} missing or empty in {note}"
        )
    assert payload["cpe"].startswith("cpe:2.3:a:") and payload["cpe"].count(":") == 12, payload[
        "cpe"
    ]
    assert payload["purl"].endswith("@" + payload["version"]), payload["purl"]
