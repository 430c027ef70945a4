"""The Python side of the Squid-under-test seam (see defs.bzl).

CEPHALOPROXY_SQUID_ROOT names a directory laid out like the image root:
usr/sbin/squid, usr/lib/squid/security_file_certgen, usr/share/squid/... .
Unset or "/" is the system's Squid (Debian's squid-openssl uses the same
paths); a relative value is a runfiles path, as Bazel's $(rootpath) gives it.
Every test that runs Squid finds it here and nowhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "CEPHALOPROXY_SQUID_ROOT"
# Not resolve(): under Bazel this file is a runfiles symlink, and data files
# of the test sit beside it in the runfiles tree.
REPO_ROOT = Path(__file__).absolute().parent.parent.parent


class SquidNotFound(Exception):
    """CEPHALOPROXY_SQUID_ROOT does not lead to a usable Squid; the message says why."""


def _runfiles_candidates(relative: str) -> list[Path]:
    found: list[Path] = []
    for base in (os.environ.get("RUNFILES_DIR"), os.environ.get("TEST_SRCDIR")):
        if base:
            for name in (relative, "_main/" + relative, relative.removeprefix("_main/")):
                found.append(Path(base) / name)
    found.append(REPO_ROOT / relative)
    # `bazel run` starts a binary in its runfiles tree (a script that imports this file from
    # the source tree then still finds its data there).
    found.append(Path.cwd() / relative)
    return found


def resolve_runfile(value: str) -> Path:
    """An absolute path, or the file a runfiles path names."""
    candidates = [Path(value)] if os.path.isabs(value) else _runfiles_candidates(value)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise SquidNotFound(f"{value!r} not found; tried: {', '.join(str(c) for c in candidates)}")


def resolve_root(value: str | None = None) -> Path:
    """The image-like root directory that CEPHALOPROXY_SQUID_ROOT names."""
    raw = os.environ.get(ROOT_ENV, "") if value is None else value
    if raw in ("", "/"):
        if not Path("/usr/sbin/squid").is_file():
            raise SquidNotFound(
                f"{ROOT_ENV}={raw!r} means the system's Squid, but /usr/sbin/squid does not exist: "
                "install one (Debian: apt-get install squid-openssl), or point "
                f"{ROOT_ENV} at a tree laid out like the image (`bazel build //squid:rootfs`, "
                "then bazel-bin/squid/rootfs); `bazel test` uses //squid by itself"
            )
        return Path("/")
    candidates = [Path(raw)] if os.path.isabs(raw) else _runfiles_candidates(raw)
    for candidate in candidates:
        if (candidate / "usr/sbin/squid").is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise SquidNotFound(f"{ROOT_ENV}={raw!r}: no usr/sbin/squid under any of: {tried}")


@dataclass(frozen=True)
class SquidLayout:
    """Paths of one Squid installation laid out like the image."""

    root: Path

    @property
    def is_system(self) -> bool:
        return self.root == Path("/")

    @property
    def squid(self) -> Path:
        return self.root / "usr/sbin/squid"

    @property
    def certgen(self) -> Path:
        return self.root / "usr/lib/squid/security_file_certgen"

    @property
    def helpers_dir(self) -> Path:
        return self.root / "usr/lib/squid"

    @property
    def share_dir(self) -> Path:
        return self.root / "usr/share/squid"

    def data_directives(self) -> str:
        """squid.conf lines that point Squid at this root's data files.

        Needed when the root is not "/": the compiled-in /usr/share/squid and
        /usr/lib/squid paths do not exist on the test host.
        """
        if self.is_system:
            return ""
        share = self.share_dir
        lines = [
            f"error_directory {share}/errors/templates",
            f"icon_directory {share}/icons",
            f"mime_table {share}/mime.conf",
        ]
        unlinkd = self.helpers_dir / "unlinkd"
        if unlinkd.exists():
            lines.append(f"unlinkd_program {unlinkd}")
        return "\n".join(lines) + "\n"


def squid_under_test() -> SquidLayout:
    return SquidLayout(resolve_root())
