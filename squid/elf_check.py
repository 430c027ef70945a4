"""Reads what an ELF file needs from the dynamic linker, in pure Python.

`read_dynamic_requirements(path)` (or `parse(name, data)`) returns the
DT_NEEDED libraries, the program interpreter, the RUNPATH/RPATH search paths
and the symbol versions required per library (the .gnu.version_r / SHT_GNU_verneed
section), which is what decides whether a binary starts on a given
distribution: every required GLIBC_x.y, GLIBCXX_x.y.z or OPENSSL_x.y.z must be
provided by the libraries there. Standard library only, so //image's checks can
reuse it (py_library //squid:elf_check) on files inside layers.

Command line: python3 -m squid.elf_check FILE...   (prints the requirements)
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

_ELF_MAGIC = b"\x7fELF"
_SHT_DYNAMIC = 6
_SHT_GNU_VERNEED = 0x6FFFFFFE
_PT_INTERP = 3
_DT_NULL = 0
_DT_NEEDED = 1
_DT_RPATH = 15
_DT_RUNPATH = 29

# e_machine values of the architectures the image is built for.
EM_X86_64 = 62
EM_AARCH64 = 183
ELF_MAGIC = _ELF_MAGIC


class ElfError(Exception):
    """The file is not an ELF file this module can read; the message names it."""


@dataclass(frozen=True)
class DynamicRequirements:
    """What one ELF file asks of the dynamic linker."""

    path: str
    machine: int
    needed: tuple[str, ...]
    # library file name -> the version names required from it, e.g.
    # {"libc.so.6": ("GLIBC_2.2.5", "GLIBC_2.34")}
    versions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # PT_INTERP: the dynamic loader the kernel starts (None for static files
    # and shared libraries).
    interpreter: str | None = None
    # DT_RUNPATH, else DT_RPATH, split on ':' ($ORIGIN left unexpanded).
    search_paths: tuple[str, ...] = ()
    # Has a dynamic section at all (statically linked files do not).
    is_dynamic: bool = True

    def versions_with_prefix(self, prefix: str) -> list[str]:
        """All required version names that start with prefix (e.g. "GLIBC_")."""
        return sorted(
            {name for names in self.versions.values() for name in names if name.startswith(prefix)},
            key=version_key,
        )

    def highest(self, prefix: str) -> str | None:
        """The highest required version with this prefix, or None if none is required."""
        found = self.versions_with_prefix(prefix)
        return found[-1] if found else None


def version_key(name: str) -> tuple[int, ...]:
    """Sort key for names like GLIBC_2.34 or GLIBCXX_3.4.30 (numeric, not lexical)."""
    _, _, number = name.rpartition("_")
    parts: list[int] = []
    for piece in number.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def version_at_most(name: str, ceiling: str) -> bool:
    """True if name's version number is <= ceiling's (both like GLIBC_2.41)."""
    return version_key(name) <= version_key(ceiling)


@dataclass(frozen=True)
class _Section:
    kind: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


class _Reader:
    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self.data = data
        if data[:4] != _ELF_MAGIC:
            raise ElfError(f"{path}: not an ELF file (no \\x7fELF magic)")
        elf_class, encoding = data[4], data[5]
        if elf_class not in (1, 2):
            raise ElfError(f"{path}: unknown ELF class {elf_class}")
        if encoding not in (1, 2):
            raise ElfError(f"{path}: unknown ELF data encoding {encoding}")
        self.is64 = elf_class == 2
        self.endian = "<" if encoding == 1 else ">"

    def unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        full = self.endian + fmt
        end = offset + struct.calcsize(full)
        if offset < 0 or end > len(self.data):
            raise ElfError(
                f"{self.path}: truncated ELF file (needs bytes {offset}..{end}, has {len(self.data)})"
            )
        return struct.unpack_from(full, self.data, offset)

    def string_at(self, table: _Section, offset: int) -> str:
        start = table.offset + offset
        end = self.data.find(b"\0", start, table.offset + table.size)
        if start >= len(self.data) or end < 0:
            raise ElfError(f"{self.path}: string offset {offset} outside its string table")
        return self.data[start:end].decode("utf-8", "replace")

    def header(self) -> tuple[int, int, int, int]:
        """(e_machine, e_shoff, e_shentsize, e_shnum)."""
        if self.is64:
            machine = self.unpack("H", 18)[0]
            shoff = self.unpack("Q", 40)[0]
            shentsize, shnum = self.unpack("HH", 58)
        else:
            machine = self.unpack("H", 18)[0]
            shoff = self.unpack("I", 32)[0]
            shentsize, shnum = self.unpack("HH", 46)
        return machine, shoff, shentsize, shnum

    def interpreter(self) -> str | None:
        """The PT_INTERP path, if the file has one."""
        if self.is64:
            phoff = self.unpack("Q", 32)[0]
            phentsize, phnum = self.unpack("HH", 54)
        else:
            phoff = self.unpack("I", 28)[0]
            phentsize, phnum = self.unpack("HH", 42)
        for index in range(phnum):
            base = phoff + index * phentsize
            if self.is64:
                p_type, _, offset, _, _, filesz = self.unpack("IIQQQQ", base)
            else:
                p_type, offset, _, _, filesz = self.unpack("IIIII", base)
            if p_type == _PT_INTERP:
                return (
                    self.data[offset : offset + filesz]
                    .split(b"\0", 1)[0]
                    .decode("utf-8", "replace")
                )
        return None

    def sections(self) -> list[_Section]:
        _, shoff, shentsize, shnum = self.header()
        if shoff == 0 or shnum == 0:
            raise ElfError(
                f"{self.path}: no section headers (cannot find .dynamic and .gnu.version_r)"
            )
        result = []
        for index in range(shnum):
            base = shoff + index * shentsize
            if self.is64:
                _, kind, _, _, offset, size, link, info, _, entsize = self.unpack(
                    "IIQQQQIIQQ", base
                )
            else:
                _, kind, _, _, offset, size, link, info, _, entsize = self.unpack(
                    "IIIIIIIIII", base
                )
            result.append(_Section(kind, offset, size, link, info, entsize))
        return result


def _dynamic_strings(reader: _Reader, sections: list[_Section], wanted: int) -> list[str]:
    """The strings of every dynamic entry tagged `wanted` (DT_NEEDED, DT_RUNPATH, ...)."""
    found: list[str] = []
    for section in sections:
        if section.kind != _SHT_DYNAMIC:
            continue
        strtab = sections[section.link]
        entry_format = "qQ" if reader.is64 else "iI"
        entry_size = 16 if reader.is64 else 8
        for offset in range(section.offset, section.offset + section.size, entry_size):
            tag, value = reader.unpack(entry_format, offset)
            if tag == _DT_NULL:
                break
            if tag == wanted:
                found.append(reader.string_at(strtab, value))
    return found


def _verneed(reader: _Reader, sections: list[_Section]) -> dict[str, tuple[str, ...]]:
    versions: dict[str, tuple[str, ...]] = {}
    for section in sections:
        if section.kind != _SHT_GNU_VERNEED:
            continue
        strtab = sections[section.link]
        offset = section.offset
        # sh_info holds the number of Verneed entries.
        for _ in range(section.info):
            _, count, file_name, aux, next_entry = reader.unpack("HHIII", offset)
            library = reader.string_at(strtab, file_name)
            names: list[str] = []
            aux_offset = offset + aux
            for _ in range(count):
                _, _, _, name, next_aux = reader.unpack("IHHII", aux_offset)
                names.append(reader.string_at(strtab, name))
                if next_aux == 0:
                    break
                aux_offset += next_aux
            versions[library] = tuple(
                sorted(set(versions.get(library, ())) | set(names), key=version_key)
            )
            if next_entry == 0:
                break
            offset += next_entry
    return versions


def parse(name: str, data: bytes) -> DynamicRequirements:
    """What the ELF file `data` (called `name` in messages) asks of the dynamic linker."""
    reader = _Reader(name, data)
    machine = reader.header()[0]
    sections = reader.sections()
    runpath = _dynamic_strings(reader, sections, _DT_RUNPATH) or _dynamic_strings(
        reader, sections, _DT_RPATH
    )
    return DynamicRequirements(
        path=name,
        machine=machine,
        needed=tuple(_dynamic_strings(reader, sections, _DT_NEEDED)),
        versions=_verneed(reader, sections),
        interpreter=reader.interpreter(),
        search_paths=tuple(p for joined in runpath for p in joined.split(":") if p),
        is_dynamic=any(section.kind == _SHT_DYNAMIC for section in sections),
    )


def read_dynamic_requirements(path: str | Path) -> DynamicRequirements:
    """What the ELF file at path asks of the dynamic linker."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ElfError(f"{name}: cannot read: {error.strerror}") from error
    return parse(name, data)


def is_elf(path: str | Path) -> bool:
    """True if the file starts with the ELF magic (unreadable files are not ELF)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == _ELF_MAGIC
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python3 -m squid.elf_check FILE...", file=sys.stderr)
        return 2
    status = 0
    for argument in argv:
        try:
            found = read_dynamic_requirements(argument)
        except ElfError as error:
            print(f"elf_check: error: {error}", file=sys.stderr)
            status = 1
            continue
        print(f"{found.path}:")
        print(f"  DT_NEEDED: {', '.join(found.needed) or '(none)'}")
        for library, names in sorted(found.versions.items()):
            print(f"  {library}: {' '.join(names)}")
        for prefix in ("GLIBC_", "GLIBCXX_", "CXXABI_", "OPENSSL_"):
            print(f"  highest {prefix}: {found.highest(prefix) or '(none)'}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
