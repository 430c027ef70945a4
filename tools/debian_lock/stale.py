"""Says which Debian packages of image/trixie.lock.json Debian has superseded.

Its one job: read Debian's package indices (dists/<suite>/<component>/binary-<arch>/Packages.xz
of every channel image/trixie.yaml names) and, for every package the lock pins, report when the
locked version is no longer the newest (a point release or a security update replaced it) or no
longer in the pool at all, so that a base image with known-fixed CVEs never ships unnoticed.
CI runs it against deb.debian.org (.ci/run); anyone can run it on demand:

    python3 tools/debian_lock/stale.py        # or: bazel run //tools/debian_lock:stale

It is our own tool because no library reads Debian's Packages indices against a
rules_distroless lock: python-debian parses indices but knows no lock, apt answers for an
installed system, and rules_distroless only rewrites the lock (README: "Refreshing the Debian
package lock"). Standard library only, so CI runs it with the host's python3 before anything
is installed.

Prints one line per stale package, e.g.

    stale: libssl3t64 (amd64) locked 3.5.4-1~deb13u1, current 3.5.9-1~deb13u1 from trixie-security

then what to run to refresh. It also checks that the lock's sha256 of a version equals the
index's SHA256 of that same version.

Exit status: 0 the lock is current; 1 stale (refresh the lock); 2 an error: a mirror or index
that cannot be read, a lock or manifest that cannot be parsed, or a locked sha256 that differs
from the index's.

Mirrors: --mirror (env DEBIAN_MIRROR, default http://deb.debian.org/debian) serves every
channel except *-security, which --security-mirror (env DEBIAN_SECURITY_MIRROR, default
http://deb.debian.org/debian-security) serves; the same variables as tools/debian-bazel/run.
Either may be a local directory laid out like a mirror (the tests use one). The indices are
read over plain HTTP without checking Release signatures: a lying mirror can hide an update
from this report, not put anything into the image (the build checks every .deb's sha256).
"""

from __future__ import annotations

import argparse
import http.client
import json
import lzma
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence, TextIO

DESCRIPTION = "Says which Debian packages of image/trixie.lock.json Debian has superseded."
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
README_SECTION = 'README "Refreshing the Debian package lock"'
SNAPSHOT_TIMESTAMP = re.compile(r"/archive/[^/]+/(\d{8}T\d{6}Z)(?:/|$)")


class InputError(Exception):
    """A mirror, index, lock or manifest that cannot be read; the message names it."""


# --- Debian version comparison (dpkg's verrevcmp, deb-version(7)) ---------------------------


@dataclass(frozen=True)
class Version:
    """A Debian version: [epoch:]upstream[-revision]."""

    epoch: int
    upstream: str
    revision: str

    @classmethod
    def parse(cls, text: str) -> Version:
        epoch_text, colon, rest = text.partition(":")
        if not colon:
            epoch_text, rest = "0", text
        if not epoch_text.isascii() or not epoch_text.isdigit():
            raise ValueError(f"bad epoch in Debian version {text!r}")
        upstream, hyphen, revision = rest.rpartition("-")
        if not hyphen:
            upstream, revision = rest, ""
        if (
            not upstream
            or (hyphen and not revision)
            or not re.fullmatch(r"[0-9A-Za-z.+~:-]+", upstream)
            or not re.fullmatch(r"[0-9A-Za-z.+~]*", revision)
        ):
            raise ValueError(f"not a Debian version: {text!r}")
        return cls(int(epoch_text), upstream, revision)


def _order(char: str) -> int:
    """dpkg's order(): ~ before the end of a part, letters before everything else."""
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternating non-digit runs (by _order) and numbers (by value)."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            a_order = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            b_order = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if a_order != b_order:
                return -1 if a_order < b_order else 1
            i += 1
            j += 1
        a_start = i
        while i < len(a) and a[i].isdigit():
            i += 1
        b_start = j
        while j < len(b) and b[j].isdigit():
            j += 1
        a_number, b_number = int(a[a_start:i] or "0"), int(b[b_start:j] or "0")
        if a_number != b_number:
            return -1 if a_number < b_number else 1
    return 0


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version a sorts before, equal to or after b (dpkg --compare-versions)."""
    left, right = Version.parse(a), Version.parse(b)
    if left.epoch != right.epoch:
        return -1 if left.epoch < right.epoch else 1
    return _compare_part(left.upstream, right.upstream) or _compare_part(
        left.revision, right.revision
    )


# --- Inputs: the lock, the manifest's channels, the indices ---------------------------------


@dataclass(frozen=True)
class Locked:
    name: str
    arch: str
    version: str
    sha256: str


@dataclass(frozen=True)
class Channel:
    suite: str  # "trixie-security"
    components: tuple[str, ...]  # ("main",)


@dataclass(frozen=True)
class Candidate:
    version: str
    sha256: str
    channel: str


def read_lock(path: Path) -> list[Locked]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        entries = [
            Locked(str(p["name"]), str(p["arch"]), str(p["version"]), str(p["sha256"]))
            for p in document["packages"]
        ]
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the lock {path}: {error}") from error
    except (KeyError, TypeError) as error:
        raise InputError(
            f"cannot read the lock {path}: not a rules_distroless lock ({error!r})"
        ) from error
    for entry in entries:
        try:
            Version.parse(entry.version)
        except ValueError as error:
            raise InputError(f"{path}: {entry.name} ({entry.arch}): {error}") from error
    if not entries:
        raise InputError(f"{path}: the lock pins no packages")
    return entries


def read_manifest(path: Path) -> tuple[list[Channel], list[str]]:
    """The channels of the manifest's `sources:` list, and the snapshot timestamps its URLs name.

    The manifest has the small fixed shape of image/trixie.yaml, read line by line:

        sources:
          - channel: trixie main
            urls:
              - https://snapshot.debian.org/archive/debian/20261128T000000Z
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise InputError(f"cannot read the manifest {path}: {error}") from error
    channels: list[Channel] = []
    timestamps: list[str] = []
    inside = False
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line.startswith(" "):
            inside = line == "sources:"
            continue
        if not inside:
            continue
        item = line.strip().removeprefix("- ").strip()
        if item.startswith("channel:"):
            words = item.removeprefix("channel:").strip().strip("'\"").split()
            if len(words) < 2:
                raise InputError(
                    f"{path}:{number}: expected 'channel: <suite> <component>...', got {raw.strip()!r}"
                )
            channels.append(Channel(words[0], tuple(words[1:])))
        elif "://" in item:
            match = SNAPSHOT_TIMESTAMP.search(item)
            if match and match.group(1) not in timestamps:
                timestamps.append(match.group(1))
        elif item != "urls:":
            raise InputError(f"{path}:{number}: unexpected line under 'sources:': {raw.strip()!r}")
    if not channels:
        raise InputError(f"{path}: no 'sources:' channels found")
    return channels, timestamps


def mirror_url(mirror: str) -> str:
    """A mirror URL, or a local directory (laid out like a mirror) as a file: URL."""
    if "://" in mirror:
        return mirror.rstrip("/")
    return Path(mirror).resolve().as_uri()


def index_url(mirror: str, suite: str, component: str, arch: str) -> str:
    return f"{mirror}/dists/{suite}/{component}/binary-{arch}/Packages.xz"


def read_index(url: str, wanted: set[str], timeout: float) -> dict[str, list[tuple[str, str]]]:
    """package -> [(version, SHA256)] of the wanted packages in one Packages.xz."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            compressed = response.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise InputError(f"cannot download {url}: {reason}") from error
    try:
        text = lzma.decompress(compressed)
    except lzma.LZMAError as error:
        raise InputError(
            f"cannot read {url}: not an xz-compressed Packages index ({error})"
        ) from error
    found: dict[str, list[tuple[str, str]]] = {}
    for stanza in text.split(b"\n\n"):
        stanza = stanza.strip(b"\n")
        if not stanza.startswith(b"Package: "):
            if stanza:
                raise InputError(f"cannot read {url}: a stanza does not start with 'Package:'")
            continue
        name = stanza.split(b"\n", 1)[0][len(b"Package: ") :].decode().strip()
        if name not in wanted:
            continue
        fields = dict(
            line.decode().split(": ", 1)
            for line in stanza.split(b"\n")
            if b": " in line and not line.startswith(b" ")
        )
        if "Version" not in fields:
            raise InputError(f"cannot read {url}: {name} has no Version")
        found.setdefault(name, []).append(
            (fields["Version"].strip(), fields.get("SHA256", "").strip())
        )
    return found


def current_candidates(
    channels: Sequence[Channel],
    archs: Sequence[str],
    wanted: set[str],
    mirror: str,
    security_mirror: str,
    timeout: float,
) -> dict[tuple[str, str], list[Candidate]]:
    """(package, arch) -> every version of it in any channel's index."""
    candidates: dict[tuple[str, str], list[Candidate]] = {}
    for channel in channels:
        base = security_mirror if channel.suite.endswith("-security") else mirror
        for component in channel.components:
            for arch in archs:
                for name, versions in read_index(
                    index_url(base, channel.suite, component, arch), wanted, timeout
                ).items():
                    candidates.setdefault((name, arch), []).extend(
                        Candidate(version, sha256, channel.suite) for version, sha256 in versions
                    )
    return candidates


# --- The report ------------------------------------------------------------------------------


def newest(candidates: Sequence[Candidate]) -> tuple[str, list[str]]:
    """The highest version and the channels that carry it (manifest order)."""
    best = candidates[0].version
    for candidate in candidates[1:]:
        if compare_versions(candidate.version, best) > 0:
            best = candidate.version
    channels: list[str] = []
    for candidate in candidates:
        if candidate.version == best and candidate.channel not in channels:
            channels.append(candidate.channel)
    return best, channels


def check(
    locked: Sequence[Locked], candidates: dict[tuple[str, str], list[Candidate]]
) -> tuple[list[str], list[str]]:
    """(stale lines, error lines) for the locked packages against the indices' candidates."""
    stale: list[str] = []
    errors: list[str] = []
    for entry in locked:
        label = f"{entry.name} ({entry.arch})"
        found = candidates.get((entry.name, entry.arch), [])
        same = [c for c in found if c.version == entry.version]
        for candidate in same:
            if candidate.sha256 and candidate.sha256 != entry.sha256:
                errors.append(
                    f"error: {label} {entry.version}: the lock's sha256 {entry.sha256} differs from "
                    f"{candidate.channel}'s index, which has {candidate.sha256}"
                )
        if not found:
            stale.append(
                f"stale: {label} locked {entry.version}, no longer in the pool, and no channel has {entry.name} any more"
            )
            continue
        best, channels = newest(found)
        current = f"{best} from {', '.join(channels)}"
        order = compare_versions(entry.version, best)
        if same and order >= 0:
            continue
        if same:
            stale.append(f"stale: {label} locked {entry.version}, current {current}")
        elif order < 0:
            stale.append(
                f"stale: {label} locked {entry.version}, no longer in the pool, current {current}"
            )
        else:
            stale.append(
                f"stale: {label} locked {entry.version}, not in the mirror's indices, whose newest is {current} (is the mirror behind?)"
            )
    return stale, errors


def refresh_hint(timestamps: Sequence[str], now: datetime) -> str:
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    old = ", ".join(timestamps) if timestamps else "the snapshot timestamps"
    return (
        f"to refresh: in image/trixie.yaml replace {old} with {stamp}, run `bazel run @trixie//:lock`, "
        f"review the diff, run `bazel test //image/...` and commit image/trixie.yaml and image/trixie.lock.json "
        f"together ({README_SECTION})"
    )


def _repository_root() -> Path:
    # `bazel run` starts in the runfiles; BUILD_WORKSPACE_DIRECTORY is the checkout.
    workspace = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
    return Path(workspace) if workspace else Path(__file__).resolve().parents[2]


def run(argv: Sequence[str], out: TextIO, err: TextIO, now: datetime | None = None) -> int:
    root = _repository_root()
    parser = argparse.ArgumentParser(prog="stale.py", description=DESCRIPTION)
    parser.add_argument("--lock", type=Path, default=root / "image" / "trixie.lock.json")
    parser.add_argument("--manifest", type=Path, default=root / "image" / "trixie.yaml")
    parser.add_argument(
        "--mirror",
        default=os.environ.get("DEBIAN_MIRROR") or DEFAULT_MIRROR,
        help="Debian archive URL or local directory (env DEBIAN_MIRROR; default %(default)s)",
    )
    parser.add_argument(
        "--security-mirror",
        default=os.environ.get("DEBIAN_SECURITY_MIRROR") or DEFAULT_SECURITY_MIRROR,
        help="security archive URL or local directory (env DEBIAN_SECURITY_MIRROR; default %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per download (default %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        locked = read_lock(args.lock)
        channels, timestamps = read_manifest(args.manifest)
        archs = sorted({entry.arch for entry in locked})
        candidates = current_candidates(
            channels,
            archs,
            {entry.name for entry in locked},
            mirror_url(args.mirror),
            mirror_url(args.security_mirror),
            args.timeout,
        )
    except InputError as error:
        print(f"error: {error}", file=err)
        return 2
    stale, errors = check(locked, candidates)
    for line in stale:
        print(line, file=out)
    for line in errors:
        print(line, file=err)
    if stale:
        print(refresh_hint(timestamps, now or datetime.now(timezone.utc)), file=out)
    if errors:
        return 2
    if stale:
        return 1
    print(
        f"lock is current ({len({entry.name for entry in locked})} packages, {len(archs)} archs)",
        file=out,
    )
    return 0


def main() -> int:
    return run(sys.argv[1:], sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
