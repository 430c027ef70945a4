#!/usr/bin/env python3
"""Bazel workspace status for stamped image builds (`--stamp`).

Prints STABLE_ keys that //image:labels and //image:push_tags substitute:
  STABLE_GIT_COMMIT               full commit hash (OCI revision label, a push tag)
  STABLE_GIT_COMMIT_TIME          commit time, UTC RFC 3339 (image `created`): the
                                  same commit always gives the same digest
  STABLE_CEPHALOPROXY_VERSION     tag vX.Y.Z at HEAD -> X.Y.Z; otherwise
                                  <MODULE.bazel version>-<short sha> (a valid tag)
  STABLE_CEPHALOPROXY_LATEST_TAG  "latest" on branch main, else the version again
                                  (a repeated tag is a no-op; an empty status
                                  value would leave the placeholder in place)
Outside a git checkout (or without git) the commit is "unknown", the time the
Unix epoch and the version the MODULE.bazel one, so every key always exists.
"""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
from pathlib import Path


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()


def module_version() -> str:
    text = (
        Path("MODULE.bazel").read_text(encoding="utf-8") if Path("MODULE.bazel").is_file() else ""
    )
    match = re.search(r'module\([^)]*?version\s*=\s*"([^"]+)"', text, re.S)
    return match.group(1) if match else "0.0.0"


def main() -> int:
    try:
        commit = git("rev-parse", "HEAD")
        commit_epoch = int(git("log", "-1", "--format=%ct", "HEAD"))
        tags = git("tag", "--points-at", "HEAD").split()
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
    except (OSError, subprocess.CalledProcessError, ValueError):
        commit, commit_epoch, tags, branch = "unknown", 0, [], ""
    release = sorted(t[1:] for t in tags if re.fullmatch(r"v\d+\.\d+\.\d+([.-][0-9A-Za-z.-]+)?", t))
    if release:
        version = release[-1]
    elif commit == "unknown":
        version = module_version()
    else:
        version = f"{module_version()}-{commit[:12]}"
    created = datetime.datetime.fromtimestamp(commit_epoch, tz=datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    print(f"STABLE_GIT_COMMIT {commit}")
    print(f"STABLE_GIT_COMMIT_TIME {created}")
    print(f"STABLE_CEPHALOPROXY_VERSION {version}")
    print(f"STABLE_CEPHALOPROXY_LATEST_TAG {'latest' if branch == 'main' else version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
