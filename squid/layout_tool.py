"""Lays out Squid's installed files as the image root: a directory or a tar layer.

Used by //squid:rootfs and //squid:layer (squid/defs.bzl). The layout is the
image's: usr/sbin/squid, usr/lib/squid/<helpers>, usr/share/squid/{errors,
icons,mime.conf}. Nothing else from `make install` is taken: /etc/squid comes
from //entrypoint, and /var/run/squid would clash with trixie's /var/run -> /run
symlink, so the runtime dirs are the image's business.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# 2000-01-01T00:00:00Z, the portable fixed mtime rules_pkg uses too: a layer
# built twice, anywhere, is byte-identical.
FIXED_MTIME = 946684800

REQUIRED_HELPERS = ("security_file_certgen", "basic_ncsa_auth")
DATA_ENTRIES = ("errors", "icons", "mime.conf")
# Installed by `make install` but useless in the image: helper-mux is a Perl
# script, and the image has no Perl.
EXCLUDED_NAMES = frozenset({"helper-mux"})


class LayoutError(Exception):
    """The install tree is not what the layout needs; the message says what to fix."""


@dataclass(frozen=True)
class Entry:
    """One path in the layout, relative to the image root."""

    path: PurePosixPath
    kind: str  # "dir", "file" or "symlink"
    source: Path | None = None
    link_target: str = ""
    executable: bool = False

    @property
    def mode(self) -> int:
        # Normalised so the build host's umask cannot leak into the image;
        # never setuid/setgid.
        if self.kind == "file" and not self.executable:
            return 0o644
        return 0o755


def _walk(source_root: Path, dest_root: PurePosixPath) -> list[Entry]:
    """Entries for everything below source_root (not source_root itself), sorted."""
    entries: list[Entry] = []
    for source in sorted(source_root.iterdir(), key=lambda p: p.name):
        if source.name in EXCLUDED_NAMES:
            continue
        entry = _entry_for(source, dest_root / source.name)
        entries.append(entry)
        if entry.kind == "dir":
            entries.extend(_walk(source, entry.path))
    return entries


def _entry_for(source: Path, dest: PurePosixPath) -> Entry:
    info = source.lstat()
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(source)
        if not os.path.isabs(target):
            # A link inside the install (e.g. a language alias in errors/):
            # kept as the same relative link.
            return Entry(dest, "symlink", source, link_target=target)
        # Bazel stages action inputs as absolute symlinks into its execroot:
        # those stand for the file or directory itself.
        info = source.stat()
    if stat.S_ISDIR(info.st_mode):
        return Entry(dest, "dir", source)
    if stat.S_ISREG(info.st_mode):
        return Entry(dest, "file", source, executable=_is_program(source))
    raise LayoutError(f"{source}: neither a file, a directory nor a symlink")


def _is_program(source: Path) -> bool:
    """ELF binaries and #! scripts are programs; everything else is data.

    Decided by content, not by mode bits: Bazel marks every output file
    executable, so the install's modes do not survive into the action inputs.
    """
    with source.open("rb") as handle:
        start = handle.read(4)
    return start == b"\x7fELF" or start.startswith(b"#!")


def collect_entries(squid: Path, helpers: Path, data: Path) -> list[Entry]:
    """All entries of the layout, parents before children, sorted."""
    if not squid.is_file():
        raise LayoutError(f"{squid}: the squid binary is missing")
    for helper in REQUIRED_HELPERS:
        if not (helpers / helper).is_file():
            raise LayoutError(
                f"{helpers / helper}: required helper missing; check --enable-* flags in squid/configure_flags.bzl"
            )
    for name in DATA_ENTRIES:
        if not (data / name).exists():
            raise LayoutError(
                f"{data / name}: missing from the install; check --datadir and DEFAULT_MIME_TABLE in squid/configure_flags.bzl"
            )

    entries = [
        Entry(PurePosixPath(d), "dir")
        for d in ("usr", "usr/sbin", "usr/lib", "usr/lib/squid", "usr/share", "usr/share/squid")
    ]
    entries.append(Entry(PurePosixPath("usr/sbin/squid"), "file", squid, executable=True))
    entries.extend(_walk(helpers, PurePosixPath("usr/lib/squid")))
    share = PurePosixPath("usr/share/squid")
    for name in DATA_ENTRIES:
        source = data / name
        entries.append(_entry_for(source, share / name))
        if entries[-1].kind == "dir":
            entries.extend(_walk(source, share / name))
    return sorted(entries, key=lambda e: e.path.parts)


def write_tree(entries: list[Entry], out_dir: Path) -> None:
    """Writes the layout into out_dir (created; must be empty if it exists)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise LayoutError(f"{out_dir}: output directory is not empty")
    for entry in entries:
        target = out_dir / entry.path
        if entry.kind == "dir":
            target.mkdir(exist_ok=True)
        elif entry.kind == "symlink":
            target.symlink_to(entry.link_target)
        else:
            assert entry.source is not None
            shutil.copyfile(entry.source, target)
        if entry.kind != "symlink":
            target.chmod(entry.mode)


def write_tar(entries: list[Entry], out_tar: Path) -> None:
    """Writes the layout as a tar: root-owned, fixed mtime, sorted, no "./" prefix."""
    partial = out_tar.with_name(out_tar.name + ".partial")
    try:
        _write_tar_entries(entries, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out_tar)


def _write_tar_entries(entries: list[Entry], partial: Path) -> None:
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(str(entry.path) + ("/" if entry.kind == "dir" else ""))
            info.mtime = FIXED_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = entry.mode
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link_target
                tar.addfile(info)
            else:
                assert entry.source is not None
                info.size = entry.source.stat().st_size
                with entry.source.open("rb") as handle:
                    tar.addfile(info, handle)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squid", type=Path, required=True, help="installed usr/sbin/squid")
    parser.add_argument(
        "--helpers", type=Path, required=True, help="installed usr/lib/squid directory"
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="installed usr/share/squid directory"
    )
    output = parser.add_mutually_exclusive_group(required=True)
    output.add_argument("--out-dir", type=Path, help="write the layout as a directory tree")
    output.add_argument("--out-tar", type=Path, help="write the layout as a tar layer")
    args = parser.parse_args(argv)
    try:
        entries = collect_entries(args.squid, args.helpers, args.data)
        if args.out_dir is not None:
            write_tree(entries, args.out_dir)
        else:
            write_tar(entries, args.out_tar)
    except (LayoutError, OSError) as error:
        print(f"layout_tool: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
