"""squid/elf_check.py against real ELF files and broken inputs."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squid.elf_check import (
    ElfError,
    is_elf,
    package_notes,
    parse_package_notes,
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
    with pytest.raises(ElfError, match=r"script\.sh: not an ELF file"):
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


def _elf_with_note_section(payload: bytes) -> bytes:
    """A minimal little-endian ELF64 file: the header, one SHT_NOTE section holding payload."""
    header_size, section_header_size = 64, 64
    section_offset = header_size
    table_offset = section_offset + len(payload)
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack(
        "<HHIQQQIHHHHHH",
        2,
        62,
        1,
        0,
        0,
        table_offset,
        0,
        header_size,
        0,
        0,
        section_header_size,
        2,
        0,
    )
    null_section = bytes(section_header_size)
    note_section = struct.pack("<IIQQQQIIQQ", 0, 7, 2, 0, section_offset, len(payload), 0, 0, 4, 0)
    return header + payload + null_section + note_section


def _note(owner: bytes, kind: int, desc: bytes) -> bytes:
    pad = lambda data: data + bytes(-len(data) % 4)  # noqa: E731
    return struct.pack("<III", len(owner), len(desc), kind) + pad(owner) + pad(desc)


def test_reads_the_fdo_package_note_and_skips_other_notes() -> None:
    payload = b'{"type":"generic","name":"squid","version":"7.7"}'
    notes = _note(b"GNU\0", 3, bytes(20)) + _note(b"FDO\0", 0xCAFE1A7E, payload + b"\0")
    assert parse_package_notes("synthetic", _elf_with_note_section(notes)) == [payload.decode()]


def test_matches_readelf_on_a_note_objcopy_added(tmp_path: Path) -> None:
    objcopy, readelf = shutil.which("objcopy"), shutil.which("readelf")
    if objcopy is None or readelf is None:
        pytest.skip("binutils' objcopy/readelf are not installed; nothing to compare with")
    payload = b'{"type":"generic","name":"squid","version":"7.7","architecture":"amd64"}'
    note_file = tmp_path / "note.bin"
    note_file.write_bytes(_note(b"FDO\0", 0xCAFE1A7E, payload + b"\0"))
    binary = tmp_path / "python"
    subprocess.run(
        [
            objcopy,
            "--add-section",
            f".note.package={note_file}",
            "--set-section-flags",
            ".note.package=alloc,readonly",
            "--set-section-alignment",
            ".note.package=4",
            str(_dynamic_interpreter()),
            str(binary),
        ],
        check=True,
    )
    notes = subprocess.run(
        [readelf, "--notes", str(binary)], capture_output=True, text=True, check=True
    ).stdout
    assert payload.decode() in notes
    assert package_notes(binary) == [payload.decode()]


@given(st.binary(max_size=256))
def test_any_note_section_content_is_read_or_refused_cleanly(payload: bytes) -> None:
    try:
        notes = parse_package_notes("fuzzed", _elf_with_note_section(payload))
    except ElfError as error:
        assert "fuzzed" in str(error)
    else:
        assert all(isinstance(note, str) for note in notes)
