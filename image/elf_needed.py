"""Reads the dynamic-linking facts of an ELF file in pure Python.

Only what the image check needs: the program interpreter (PT_INTERP), the
DT_NEEDED libraries and the DT_RPATH/DT_RUNPATH search paths. Works on 32/64
bit and either byte order, so an arm64 image can be checked on an amd64 host.
"""

from __future__ import annotations

import posixpath
import struct
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"

PT_LOAD = 1
PT_DYNAMIC = 2
PT_INTERP = 3

DT_NULL = 0
DT_NEEDED = 1
DT_STRTAB = 5
DT_STRSZ = 10
DT_RPATH = 15
DT_RUNPATH = 29

# glibc's default search directories, per ELF machine (e_machine).
EM_X86_64 = 62
EM_AARCH64 = 183
MULTIARCH_TRIPLETS = {EM_X86_64: "x86_64-linux-gnu", EM_AARCH64: "aarch64-linux-gnu"}


class ElfError(Exception):
    """The file is not an ELF file this parser understands."""


@dataclass(frozen=True)
class DynamicInfo:
    machine: int
    interpreter: str | None
    needed: tuple[str, ...]
    search_paths: tuple[str, ...]  # DT_RUNPATH, else DT_RPATH, split on ':'
    is_dynamic: bool


def parse(data: bytes) -> DynamicInfo:
    """Parses the ELF header, program headers and dynamic section of `data`."""
    if data[:4] != ELF_MAGIC or len(data) < 52:
        raise ElfError("not an ELF file")
    is_64 = data[4] == 2
    order = "<" if data[5] == 1 else ">"
    if is_64:
        (machine,) = struct.unpack_from(order + "H", data, 18)
        phoff, = struct.unpack_from(order + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 54)
    else:
        (machine,) = struct.unpack_from(order + "H", data, 18)
        phoff, = struct.unpack_from(order + "I", data, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 42)

    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None  # (offset, size)
    interpreter: str | None = None
    for index in range(phnum):
        start = phoff + index * phentsize
        if is_64:
            p_type, _flags, offset, vaddr, _paddr, filesz = struct.unpack_from(order + "IIQQQQ", data, start)
        else:
            p_type, offset, vaddr, _paddr, filesz = struct.unpack_from(order + "IIIII", data, start)
        if p_type == PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (offset, filesz)
        elif p_type == PT_INTERP:
            interpreter = data[offset:offset + filesz].split(b"\0", 1)[0].decode()

    if dynamic is None:
        return DynamicInfo(machine, interpreter, (), (), is_dynamic=False)

    entry_format = order + ("qQ" if is_64 else "iI")
    entry_size = struct.calcsize(entry_format)
    tags: list[tuple[int, int]] = []
    offset, size = dynamic
    for position in range(offset, offset + size, entry_size):
        tag, value = struct.unpack_from(entry_format, data, position)
        if tag == DT_NULL:
            break
        tags.append((tag, value))

    strtab_vaddr = next((v for t, v in tags if t == DT_STRTAB), None)
    if strtab_vaddr is None:
        raise ElfError("dynamic section without DT_STRTAB")
    strtab = _vaddr_to_offset(loads, strtab_vaddr)

    def string_at(index: int) -> str:
        end = data.index(b"\0", strtab + index)
        return data[strtab + index:end].decode()

    needed = tuple(string_at(v) for t, v in tags if t == DT_NEEDED)
    runpath = [string_at(v) for t, v in tags if t == DT_RUNPATH]
    rpath = [string_at(v) for t, v in tags if t == DT_RPATH]
    raw_paths = runpath or rpath
    search = tuple(p for joined in raw_paths for p in joined.split(":") if p)
    return DynamicInfo(machine, interpreter, needed, search, is_dynamic=True)


def _vaddr_to_offset(loads: list[tuple[int, int, int]], vaddr: int) -> int:
    for start, offset, filesz in loads:
        if start <= vaddr < start + filesz:
            return offset + (vaddr - start)
    raise ElfError(f"address {vaddr:#x} is in no PT_LOAD segment")


def default_search_paths(machine: int) -> tuple[str, ...]:
    """Where glibc's loader looks after RPATH/RUNPATH on Debian (ld.so.conf.d
    multiarch dirs, then the trusted dirs)."""
    triplet = MULTIARCH_TRIPLETS.get(machine)
    multiarch = (f"/usr/local/lib/{triplet}", f"/lib/{triplet}", f"/usr/lib/{triplet}") if triplet else ()
    return multiarch + ("/usr/local/lib", "/lib", "/usr/lib", "/lib64", "/usr/lib64")


def candidate_dirs(info: DynamicInfo, file_path: str) -> list[str]:
    """Directories to search for this file's DT_NEEDED, $ORIGIN expanded."""
    origin = posixpath.dirname(file_path)
    expanded = [p.replace("${ORIGIN}", origin).replace("$ORIGIN", origin) for p in info.search_paths]
    return expanded + list(default_search_paths(info.machine))
