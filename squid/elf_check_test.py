"""squid/elf_check.py against real ELF files and broken inputs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from squid.elf_check import (
    ElfError,
    is_elf,
    read_dynamic_requirements,
    version_at_most,
    version_key,
)


def _dynamic_interpreter() -> Path:
    """The running Python binary: a real, dynamically linked ELF file on Linux."""
    path = Path(sys.executable).resolve()
    if not is_elf(path):
        pytest.skip(f"{path} is not an ELF file")
    return path


def test_reads_needed_libraries_of_a_real_binary() -> None:
    found = read_dynamic_requirements(_dynamic_interpreter())
    assert any(name.startswith("libc.so") for name in found.needed), found.needed
    assert found.highest("GLIBC_") is not None


def test_matches_readelf_where_available() -> None:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("binutils' readelf is not installed; nothing to compare with")
    binary = _dynamic_interpreter()
    found = read_dynamic_requirements(binary)
    dynamic = subprocess.run(
        [readelf, "-d", str(binary)], capture_output=True, text=True, check=True
    ).stdout
    expected_needed = [
        line.split("[", 1)[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line
    ]
    assert list(found.needed) == expected_needed
    versions = subprocess.run(
        [readelf, "-V", str(binary)], capture_output=True, text=True, check=True
    ).stdout
    expected_names = {
        line.split("Name:", 1)[1].split()[0]
        for line in versions.splitlines()
        if "Name:" in line and "Flags" in line
    }
    actual_names = {name for names in found.versions.values() for name in names}
    assert actual_names == expected_names


def test_version_order_is_numeric() -> None:
    assert version_key("GLIBC_2.41") > version_key("GLIBC_2.5")
    assert version_at_most("GLIBCXX_3.4.9", "GLIBCXX_3.4.33")
    assert not version_at_most("GLIBCXX_3.4.34", "GLIBCXX_3.4.33")
    assert version_at_most("GLIBC_2.41", "GLIBC_2.41")


def test_rejects_a_non_elf_file_naming_it(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ElfError, match="script.sh: not an ELF file"):
        read_dynamic_requirements(script)
    assert not is_elf(script)


def test_rejects_a_truncated_elf_file(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated"
    truncated.write_bytes(_dynamic_interpreter().read_bytes()[:40])
    with pytest.raises(ElfError, match="truncated"):
        read_dynamic_requirements(truncated)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ElfError, match="cannot read"):
        read_dynamic_requirements(tmp_path / "absent")
