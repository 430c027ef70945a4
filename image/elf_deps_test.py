"""Every ELF file's shared libraries (DT_NEEDED) and loader exist in the image.

Resolution follows glibc's order: DT_RUNPATH (or DT_RPATH) with $ORIGIN, then
the multiarch and default directories, through the image's own symlinks
(/lib -> usr/lib and friends). No container runtime or host loader involved.
"""

from __future__ import annotations

import posixpath

import pytest

from squid import elf_check
from image.built_image import built_image_or_skip
from image.layers.oci_layout import Image


# glibc's multiarch directories, per ELF machine (e_machine).
MULTIARCH_TRIPLETS = {
    elf_check.EM_X86_64: "x86_64-linux-gnu",
    elf_check.EM_AARCH64: "aarch64-linux-gnu",
}


def inspect(path: str, data: bytes) -> elf_check.DynamicRequirements | None:
    try:
        return elf_check.parse(path, data)
    except elf_check.ElfError:
        return None


def default_search_paths(machine: int) -> tuple[str, ...]:
    """Where glibc's loader looks after RPATH/RUNPATH on Debian (ld.so.conf.d
    multiarch dirs, then the trusted dirs)."""
    triplet = MULTIARCH_TRIPLETS.get(machine)
    multiarch = (
        (f"/usr/local/lib/{triplet}", f"/lib/{triplet}", f"/usr/lib/{triplet}") if triplet else ()
    )
    return multiarch + ("/usr/local/lib", "/lib", "/usr/lib", "/lib64", "/usr/lib64")


def candidate_dirs(info: elf_check.DynamicRequirements, file_path: str) -> list[str]:
    """Directories to search for this file's DT_NEEDED, $ORIGIN expanded."""
    origin = posixpath.dirname(file_path)
    expanded = [
        p.replace("${ORIGIN}", origin).replace("$ORIGIN", origin) for p in info.search_paths
    ]
    return expanded + list(default_search_paths(info.machine))


@pytest.fixture(scope="module")
def image() -> Image:
    return built_image_or_skip(inspect_file=inspect, inspect_prefix_bytes=elf_check.ELF_MAGIC)


def find_library(image: Image, name: str, directories: list[str]) -> str | None:
    for directory in directories:
        real_dir = image.resolve(directory)
        if real_dir is None:
            continue
        found = image.resolve(posixpath.join(real_dir, name))
        if found is not None and image.entries[found].kind == "file":
            return found
    return None


def test_every_elf_file_finds_its_libraries(image: Image) -> None:
    dynamic = {
        p: info
        for p, info in image.file_facts.items()
        if isinstance(info, elf_check.DynamicRequirements) and info.is_dynamic
    }
    assert dynamic, "no dynamically linked ELF file found in the image"
    missing: list[str] = []
    for path, info in sorted(dynamic.items()):
        if info.interpreter and image.resolve(info.interpreter) is None:
            missing.append(f"{path}: loader {info.interpreter}")
        directories = candidate_dirs(info, path)
        for library in info.needed:
            if find_library(image, library, directories) is None:
                missing.append(f"{path}: {library}")
    assert missing == [], "unresolved shared libraries:\n" + "\n".join(missing)


def test_checked_files_include_squid_and_python(image: Image) -> None:
    """Guards the check above against silently skipping the programs that matter."""
    for program in ("/usr/sbin/squid", "/usr/lib/squid/security_file_certgen", "/usr/bin/python3"):
        real = image.resolve(program)
        assert real is not None, f"{program} missing"
        assert real in image.file_facts, f"{program} ({real}) was not parsed as ELF"


def test_elf_files_match_the_image_architecture(image: Image) -> None:
    expected = {"amd64": elf_check.EM_X86_64, "arm64": elf_check.EM_AARCH64}[
        str(image.config["architecture"])
    ]
    wrong = sorted(
        p
        for p, info in image.file_facts.items()
        if isinstance(info, elf_check.DynamicRequirements) and info.machine != expected
    )
    assert wrong == []
