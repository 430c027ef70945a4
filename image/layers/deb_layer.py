"""Writes one reproducible image layer from Debian .deb files, as distroless images hold them.

Our own because nothing the offline build can reach does this: rules_distroless (what //image
used) is not packaged by Debian, and dpkg would run maintainer scripts and want a root
filesystem. A .deb is an ar archive of debian-binary, control.tar.* and data.tar.*; this reads
them with the standard library (tarfile reads gzip, xz, bzip2 and plain tar; Debian's own
packages use xz) and writes:

  * every member of each data.tar, merged-/usr as rules_distroless's `mergedusr` does (/bin,
    /sbin, /lib* move below /usr; trixie's base-files already ships /bin -> usr/bin),
  * /var/lib/dpkg/status.d/<package> (the control file) and <package>.md5sums, one record
    per package as distroless does, so scanners see which packages the image holds,
  * without the members an exclude file (path_rules filter lines) drops; a directory stays
    while anything below it stays,
  * optionally __pycache__ bytecode for the .py files below some directories and extra
    symlinks (the Python runtime layer: layer_builder.add_bytecode's compiler).

Deterministic like layer_builder.py: members sorted by path, mtime 0, owner names empty,
modes and numeric owners as the .deb has them, PAX headers in utf-8, gzip without a timestamp.

    deb_layer.py --output OUT.tar.gz [--exclude RULES] [--bytecode TAG:DIR]... \\
                 [--symlink PATH=TARGET]... DEB...
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from image.layers import layer_builder, path_rules

AR_MAGIC = b"!<arch>\n"
STATUS_DIR = "var/lib/dpkg/status.d"
# rules_distroless's mergedusr mapping: what usrmerge moved below /usr.
MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "libo32")


class DebError(Exception):
    """A .deb or a combination of them that cannot become a layer; the message says which."""


@dataclass(frozen=True)
class Member:
    """One member of the layer: a tar header (name relative to /) and a regular file's bytes."""

    info: tarfile.TarInfo
    data: bytes | None
    package: str


def read_ar(path: Path) -> dict[str, bytes]:
    """The members of an ar archive (the .deb container), by name."""
    raw = path.read_bytes()
    if not raw.startswith(AR_MAGIC):
        raise DebError(f"{path}: not a .deb (no ar archive header)")
    members: dict[str, bytes] = {}
    offset = len(AR_MAGIC)
    while offset + 60 <= len(raw):
        header = raw[offset : offset + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as error:
            raise DebError(f"{path}: corrupt ar member header at byte {offset}") from error
        start = offset + 60
        members[name] = raw[start : start + size]
        offset = start + size + (size % 2)  # members are 2-byte aligned
    return members


def open_member_tar(deb: Path, members: dict[str, bytes], stem: str) -> tarfile.TarFile:
    """control.tar.* or data.tar.*; a clear error for a compression tarfile cannot read."""
    names = [n for n in members if n == stem or n.startswith(stem + ".")]
    if len(names) != 1:
        raise DebError(f"{deb}: expected one {stem}.* member, found {sorted(members)}")
    name = names[0]
    if name.endswith((".zst", ".lzma")):
        raise DebError(
            f"{deb}: {name} is compressed with {name.rsplit('.', 1)[1]}, which Python 3.13's tarfile "
            "cannot read; pin a version of the package built with xz (Debian's default) or extend "
            "image/layers/deb_layer.py"
        )
    try:
        return tarfile.open(fileobj=io.BytesIO(members[name]), mode="r:*", encoding="utf-8")
    except tarfile.TarError as error:
        raise DebError(f"{deb}: cannot read {name}: {error}") from error


def control_files(deb: Path, members: dict[str, bytes]) -> tuple[str, bytes, bytes | None]:
    """The package name, its control file and its md5sums (None when it has none)."""
    found: dict[str, bytes] = {}
    with open_member_tar(deb, members, "control.tar") as archive:
        for member in archive:
            name = path_rules.relative(member.name)
            if name in ("control", "md5sums") and member.isfile():
                extracted = archive.extractfile(member)
                found[name] = extracted.read() if extracted else b""
    if "control" not in found:
        raise DebError(f"{deb}: control.tar has no ./control")
    fields = dict(
        line.split(": ", 1)
        for line in found["control"].decode("utf-8").splitlines()
        if ": " in line and not line[:1].isspace()
    )
    if "Package" not in fields:
        raise DebError(f"{deb}: ./control has no Package field")
    return fields["Package"].strip(), found["control"], found.get("md5sums")


def merged_usr(name: str) -> str:
    """bin/x -> usr/bin/x and likewise for sbin and lib*; the top-level names stay
    (base-files ships them as the symlinks into /usr)."""
    top, sep, rest = name.partition("/")
    if sep and rest and top in MERGED_USR:
        return f"usr/{top}/{rest}"
    return name


def header(name: str, source: tarfile.TarInfo) -> tarfile.TarInfo:
    """A copy of the .deb's header with the layer's name and fixed time and owner names."""
    info = tarfile.TarInfo(name)
    info.type = source.type
    info.mode = source.mode
    info.uid = source.uid
    info.gid = source.gid
    info.uname = ""
    info.gname = ""
    info.mtime = 0
    info.size = source.size if source.isfile() else 0
    info.linkname = (
        merged_usr(path_rules.relative(source.linkname)) if source.islnk() else source.linkname
    )
    return info


def data_members(deb: Path, members: dict[str, bytes], package: str) -> list[Member]:
    found: list[Member] = []
    with open_member_tar(deb, members, "data.tar") as archive:
        for source in archive:
            name = merged_usr(path_rules.relative(source.name))
            if name in ("", "."):
                continue  # the archive's root: not a member of the layer
            if source.isdir() and name in MERGED_USR:
                name = f"usr/{name}"  # a pre-merge package's /lib directory is /usr/lib now
            if not (source.isfile() or source.isdir() or source.issym() or source.islnk()):
                raise DebError(
                    f"{deb}: /{name} is a device, fifo or other special file; an image layer holds none"
                )
            data = None
            if source.isfile():
                extracted = archive.extractfile(source)
                data = extracted.read() if extracted else b""
            found.append(Member(header(name, source), data, package))
    return found


def generated(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, linkname: str = ""
) -> tarfile.TarInfo:
    """A header for what the layer adds itself (status records, parents, bytecode, links):
    root-owned, mtime 0, no owner names; 0644 files, 0755 directories, 0777 symlinks."""
    info = tarfile.TarInfo(name)
    info.type, info.mtime, info.uname, info.gname, info.linkname = kind, 0, "", "", linkname
    info.mode = {tarfile.DIRTYPE: 0o755, tarfile.SYMTYPE: 0o777}.get(kind, 0o644)
    info.size = len(data) if data is not None else 0
    return info


def status_members(package: str, control: bytes, md5sums: bytes | None) -> list[Member]:
    records = [(f"{STATUS_DIR}/{package}", control)]
    if md5sums is not None:
        records.append((f"{STATUS_DIR}/{package}.md5sums", md5sums))
    return [Member(generated(name, data=data), data, package) for name, data in records]


def merge(members: list[Member]) -> dict[str, Member]:
    """One member per path. A directory given twice keeps the first; anything else given twice
    must be identical (flatten's deduplicate), or the layer would depend on the .deb order."""
    by_path: dict[str, Member] = {}
    for member in members:
        name = member.info.name
        previous = by_path.get(name)
        if previous is None:
            by_path[name] = member
            continue
        if previous.info.isdir() and member.info.isdir():
            continue
        same = (previous.info.type, previous.info.mode, previous.info.linkname, previous.data) == (
            member.info.type,
            member.info.mode,
            member.info.linkname,
            member.data,
        )
        if not same:
            raise DebError(
                f"/{name} differs between {previous.package} and {member.package}; drop it from one with the exclude file"
            )
    return by_path


def drop_excluded(by_path: dict[str, Member], rules: list[path_rules.Rule]) -> None:
    """Drops what the rules drop, keeping every directory above a kept member."""
    gone = {name for name in by_path if path_rules.dropped(rules, name)}
    for name in [n for n in by_path if n not in gone]:
        for parent in PurePosixPath(name).parents:
            gone.discard(str(parent))
    for name, member in by_path.items():
        if name not in gone and member.info.islnk() and member.info.linkname in gone:
            raise DebError(
                f"/{name} is a hard link to /{member.info.linkname}, which the exclude rules drop; drop both or neither"
            )
    for name in gone:
        del by_path[name]


def add_parents(by_path: dict[str, Member]) -> None:
    for name in list(by_path):
        for parent in PurePosixPath(name).parents:
            key = str(parent)
            if key != "." and key not in by_path:
                by_path[key] = Member(generated(key, tarfile.DIRTYPE), None, "")


def add_bytecode(by_path: dict[str, Member], cache_tag: str, under: str) -> None:
    """__pycache__/<module>.<cache_tag>.pyc beside every .py file below `under`, compiled the
    way layer_builder compiles the image's other bytecode (unchecked-hash, image paths).
    The modules become 0644 whatever the .deb says (Debian ships a few, such as tarfile.py,
    0755 for their `#!` line): they are imported, never executed, as python_runtime_layer
    does for the toolchain's stdlib."""
    prefix = path_rules.relative(under).rstrip("/") + "/"
    sources = sorted(
        n
        for n, m in by_path.items()
        if n.startswith(prefix) and n.endswith(".py") and m.info.isfile()
    )
    for name in sources:
        by_path[name].info.mode = 0o644
    if sys.implementation.cache_tag != cache_tag:
        raise DebError(
            f"bytecode for {cache_tag} asked for, but this tool runs {sys.implementation.cache_tag}; run it with the image's Python version"
        )
    with tempfile.TemporaryDirectory(prefix="deb-layer-") as scratch:
        pairs = []
        for number, name in enumerate(sources):
            source = Path(scratch, f"{number}.py")
            source.write_bytes(by_path[name].data or b"")
            pairs.append((str(source), "/" + name))
        compiled = layer_builder.compile_bytecode(pairs)
    for name, data in zip(sources, compiled, strict=True):
        if data is None:
            continue  # not Python 3 source (lib2to3 test fixtures): nothing to cache
        module = PurePosixPath(name)
        cached = str(module.parent / "__pycache__" / f"{module.stem}.{cache_tag}.pyc")
        by_path[cached] = Member(generated(cached, data=data), data, by_path[name].package)


def add_symlink(by_path: dict[str, Member], spec: str) -> None:
    path, sep, target = spec.partition("=")
    if not sep or not target:
        raise DebError(f"--symlink {spec!r}: write PATH=TARGET")
    name = path_rules.relative(path)
    by_path[name] = Member(generated(name, tarfile.SYMTYPE, linkname=target), None, "")


def build(
    debs: list[Path], rules: list[path_rules.Rule], bytecode: list[str], symlinks: list[str]
) -> list[Member]:
    members: list[Member] = []
    seen: dict[str, Path] = {}
    for deb in debs:
        ar_members = read_ar(deb)
        package, control, md5sums = control_files(deb, ar_members)
        if package in seen:
            raise DebError(f"{deb} and {seen[package]} are both the package {package}")
        seen[package] = deb
        members += data_members(deb, ar_members, package) + status_members(
            package, control, md5sums
        )
    by_path = merge(members)
    drop_excluded(by_path, rules)
    for spec in symlinks:
        add_symlink(by_path, spec)
    for spec in bytecode:
        cache_tag, sep, under = spec.partition(":")
        if not sep:
            raise DebError(
                f"--bytecode {spec!r}: write CACHE_TAG:DIR, e.g. cpython-313:/usr/lib/python3.13"
            )
        add_bytecode(by_path, cache_tag, under)
    add_parents(by_path)
    return [by_path[name] for name in sorted(by_path)]


def write(members: list[Member], output: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(
        fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8"
    ) as archive:
        for member in members:
            archive.addfile(
                member.info, io.BytesIO(member.data) if member.data is not None else None
            )
    layer_builder.write_gzip(raw.getvalue(), output)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="layer .tar.gz to write")
    parser.add_argument(
        "--exclude", type=Path, help="path_rules filter lines: what of the .debs stays out"
    )
    parser.add_argument(
        "--bytecode",
        action="append",
        default=[],
        help="CACHE_TAG:DIR: compile the .py files below DIR",
    )
    parser.add_argument("--symlink", action="append", default=[], help="PATH=TARGET: add a symlink")
    parser.add_argument("debs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        rules = (
            path_rules.parse_filter(args.exclude.read_text(encoding="utf-8").splitlines())
            if args.exclude
            else []
        )
        write(build(args.debs, rules, args.bytecode, args.symlink), args.output)
    except (
        DebError,
        layer_builder.SpecError,
        path_rules.RuleError,
        OSError,
        tarfile.TarError,
        UnicodeDecodeError,
    ) as error:
        print(f"deb_layer: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
