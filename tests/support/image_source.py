"""Which image the acceptance suite tests, and getting it into the container runtime.

Two inputs, checked in this order:
  CEPHALOPROXY_IMAGE          an image reference already present in docker/podman
  CEPHALOPROXY_IMAGE_TARBALL  a `docker load`-able tar; under Bazel this is
                              $(rootpath //image:tarball), a runfiles-relative path
"""

from __future__ import annotations

import dataclasses
import json
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path

IMAGE_ENV = "CEPHALOPROXY_IMAGE"
TARBALL_ENV = "CEPHALOPROXY_IMAGE_TARBALL"

NO_IMAGE_REASON = (
    f"no CephaloProxy image to test: set {IMAGE_ENV} to an image already loaded into "
    f"docker/podman, or {TARBALL_ENV} to a `docker load`-able tar (e.g. the output of "
    "`bazel build //image:tarball`); under Bazel, `bazel test //tests/acceptance:acceptance_test` "
    "passes //image:tarball itself"
)


class ImageSourceError(ValueError):
    """The user named an image input that cannot be used (missing file, unreadable tar)."""


@dataclasses.dataclass(frozen=True)
class ImageChoice:
    """Either an existing image reference or a tarball to load."""

    reference: str | None = None
    tarball: Path | None = None

    def describe(self) -> str:
        return f"image {self.reference}" if self.reference else f"tarball {self.tarball}"


def resolve_runfiles_path(value: str, environ: Mapping[str, str]) -> Path | None:
    """Resolve an absolute, cwd-relative or Bazel runfiles-relative path; None if nowhere."""
    candidate = Path(value)
    if candidate.is_absolute():
        return candidate if candidate.exists() else None
    if candidate.exists():
        return candidate.resolve()
    stripped = value[len("_main/") :] if value.startswith("_main/") else value
    for root_var in ("RUNFILES_DIR", "TEST_SRCDIR"):
        root = environ.get(root_var)
        if not root:
            continue
        for relative in (value, f"_main/{stripped}", stripped):
            path = Path(root) / relative
            if path.exists():
                return path
    return None


def choose_image(environ: Mapping[str, str] | None = None) -> ImageChoice | None:
    """The image named by the environment, None when nothing is named.

    Raises ImageSourceError when a tarball is named but cannot be found: the user asked
    for a specific build, so silently skipping would hide their mistake.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    reference = env.get(IMAGE_ENV, "").strip()
    if reference:
        return ImageChoice(reference=reference)
    tarball_value = env.get(TARBALL_ENV, "").strip()
    if not tarball_value:
        return None
    tarball = resolve_runfiles_path(tarball_value, env)
    if tarball is None:
        raise ImageSourceError(
            f"{TARBALL_ENV}={tarball_value!r}: no such file (looked relative to the current "
            "directory and to $RUNFILES_DIR/$TEST_SRCDIR); build it with "
            "`bazel build //image:tarball` and pass the path of the produced tar"
        )
    if not tarball.is_file():
        raise ImageSourceError(f"{TARBALL_ENV}={tarball_value!r}: {tarball} is not a regular file")
    return ImageChoice(tarball=tarball)


def repo_tags_in_tarball(tarball: Path) -> list[str]:
    """Tags recorded in a docker-archive (manifest.json RepoTags) or OCI layout (ref.name)."""
    try:
        with tarfile.open(tarball) as archive:
            names = {member.name.removeprefix("./"): member for member in archive.getmembers()}
            if "manifest.json" in names:
                handle = archive.extractfile(names["manifest.json"])
                manifest = json.load(handle) if handle else []
                return [tag for entry in manifest for tag in (entry.get("RepoTags") or [])]
            if "index.json" in names:
                handle = archive.extractfile(names["index.json"])
                index = json.load(handle) if handle else {}
                return [
                    ref
                    for entry in index.get("manifests", [])
                    if (
                        ref := entry.get("annotations", {}).get("org.opencontainers.image.ref.name")
                    )
                ]
    except (tarfile.TarError, OSError, json.JSONDecodeError) as error:
        raise ImageSourceError(f"{tarball}: not a readable image tar ({error})") from error
    raise ImageSourceError(f"{tarball}: neither manifest.json (docker) nor index.json (OCI) inside")
