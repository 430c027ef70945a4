"""Builds targets in two fresh checkouts of one commit and fails unless every output is bit-for-bit equal.

    python3 -m tools.ci.reproducible_build                 # the targets in tools/ci/reproducible_targets.txt
    python3 -m tools.ci.reproducible_build //squid:layer   # on demand: the Squid layer (a cold compile)
    python3 -m tools.ci.reproducible_build --worktree-changes //some:target   # uncommitted edits too
    python3 -m tools.ci.reproducible_build --revision COMMIT                  # another commit

Run it from the repository root, as root (tools/debian-bazel/run needs it). It
checks out the commit twice (local git clones at two different paths, removed
afterwards), builds the targets in each, one after the other, with
`tools/debian-bazel/run build --disk_cache=` (the checkout's path keys Bazel's
output base, so the two builds share no output base, and no disk cache means
every action runs twice; the repository cache stays shared: it is keyed by
sha256, and the run script seeds the Squid tarball there), then digests every
output file of the targets (from the build event file) and compares. On a
difference it prints, for the first differing output, where it first differs
(image/layers/layer_diff.py: the layer member's path, size, mode, owner and
content hash; or the JSON value) and exits 1. Exit 2: the check could not run.

No library checks out and builds twice (diffoci compares images, reprotest
needs a Debian source package), so this is written here; the comparison
itself is layer_diff's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image.layers import layer_diff

TARGETS_FILE = Path("tools/ci/reproducible_targets.txt")
RUN_BAZEL = "tools/debian-bazel/run"
# Inside the checkout, so tools/debian-bazel/run (which mounts the checkout) can write it.
EVENTS_FILE = "bazel-reproducible-build-events.json"

# (checkout, targets) -> {output key: output path}: one build, its outputs by a name both builds share.
Build = Callable[[Path, list[str]], dict[str, Path]]


class CheckError(Exception):
    """The check could not run (not a reproducibility failure); the message says what to do."""


@dataclass(frozen=True)
class Difference:
    """One output that is not the same in both builds, with layer_diff's explanation."""

    key: str
    first_digest: str
    second_digest: str
    explanation: list[str]


def read_targets(path: Path) -> list[str]:
    """The labels in a targets file: one a line, `#` comments and blank lines ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise CheckError(f"cannot read the targets file {path}: {error}") from error
    targets = [line.split("#", 1)[0].strip() for line in lines]
    targets = [target for target in targets if target]
    if not targets:
        raise CheckError(f"{path} names no target: write one Bazel label a line")
    return targets


def _file_path(entry: dict[str, object]) -> Path:
    uri = str(entry.get("uri", ""))
    if not uri.startswith("file://"):
        raise CheckError(
            f"the build event file names an output that is not a local file: {uri or entry}"
        )
    return Path(urllib.parse.unquote(uri[len("file://") :]))


def outputs_from_events(events: list[dict[str, object]]) -> dict[str, Path]:
    """Every file the completed targets output, keyed by bazel-out path (the same in both builds)."""
    named_sets: dict[str, dict[str, Any]] = {}  # parsed JSON
    roots: list[str] = []
    for event in events:
        event_id = event.get("id", {})
        assert isinstance(event_id, dict)
        if "namedSet" in event_id:
            named_set = event.get("namedSetOfFiles", {})
            assert isinstance(named_set, dict), event
            named_sets[str(event_id["namedSet"]["id"])] = named_set
        elif "targetCompleted" in event_id:
            completed = event.get("completed", {})
            assert isinstance(completed, dict)
            if not completed.get("success"):
                raise CheckError(f"{event_id['targetCompleted'].get('label')} did not build")
            for group in completed.get("outputGroup", []):
                roots += [str(file_set["id"]) for file_set in group.get("fileSets", [])]
    outputs: dict[str, Path] = {}
    pending, seen = list(roots), set()
    while pending:
        set_id = pending.pop()
        if set_id in seen:
            continue
        seen.add(set_id)
        named = named_sets.get(set_id, {})
        for entry in named.get("files", []):
            key = "/".join([*entry.get("pathPrefix", []), entry["name"]])
            outputs[key] = _file_path(entry)
        pending += [str(child["id"]) for child in named.get("fileSets", [])]
    return outputs


def read_events(path: Path) -> list[dict[str, object]]:
    """The JSON build event file: one event a line."""
    try:
        return [
            json.loads(line)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except (OSError, ValueError) as error:
        raise CheckError(f"cannot read the build event file {path}: {error}") from error


def compare_outputs(first: dict[str, Path], second: dict[str, Path]) -> list[Difference]:
    """The outputs whose digests differ (or that only one build has), in sorted order."""
    differences = []
    for key in sorted(set(first) | set(second)):
        if key not in first or key not in second:
            only = "first" if key in first else "second"
            digest = layer_diff.path_digest((first if key in first else second)[key])
            digests = (digest, "") if only == "first" else ("", digest)
            differences.append(Difference(key, *digests, [f"only the {only} build has it"]))
            continue
        digests = layer_diff.path_digest(first[key]), layer_diff.path_digest(second[key])
        if digests[0] != digests[1]:
            differences.append(
                Difference(key, *digests, layer_diff.compare_paths(first[key], second[key]))
            )
    return differences


def report(differences: list[Difference], outputs: dict[str, Path]) -> list[str]:
    """What the check prints: every output's digest, then the first difference in detail."""
    if not differences:
        return [f"reproducible: {len(outputs)} outputs identical in both builds"] + [
            f"  {layer_diff.path_digest(path)}  {key}" for key, path in sorted(outputs.items())
        ]
    first = differences[0]
    lines = [f"NOT reproducible: {len(differences)} of {len(outputs)} outputs differ"]
    lines += [
        f"  {d.key}: {d.first_digest or '(absent)'} vs {d.second_digest or '(absent)'}"
        for d in differences
    ]
    lines += [f"first difference, in {first.key}:"] + [f"  {line}" for line in first.explanation]
    return lines


def check(checkouts: tuple[Path, Path], targets: list[str], build: Build) -> tuple[int, list[str]]:
    """Builds in each checkout in turn, compares; (exit code, lines to print)."""
    first = build(checkouts[0], targets)
    second = build(checkouts[1], targets)
    if not first:
        raise CheckError(f"{' '.join(targets)} output no files: nothing to compare")
    differences = compare_outputs(first, second)
    return (1 if differences else 0), report(differences, first)


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise CheckError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def revision_to_check(repo: Path, worktree_changes: bool, revision: str = "HEAD") -> str:
    """The revision's commit, or with worktree_changes one of the tracked uncommitted edits (git stash create)."""
    if worktree_changes:
        stash = _git(repo, "stash", "create", "reproducible_build: the working tree")
        if stash:
            return stash
    return _git(repo, "rev-parse", "--verify", "--end-of-options", f"{revision}^{{commit}}")


@contextmanager
def two_checkouts(
    repo: Path, revision: str, parent: Path, keep: bool
) -> Iterator[tuple[Path, Path]]:
    """Two local clones (objects hard-linked, nothing registered in repo) of revision at different paths."""
    paths = (
        parent / "first",
        parent / "second-checkout",
    )  # different lengths too: a leaked path shows
    try:
        for path in paths:
            _git(repo, "clone", "--quiet", "--local", "--no-checkout", str(repo), str(path))
            _git(path, "checkout", "--quiet", "--detach", revision)
        yield paths
    finally:
        if not keep:
            for path in paths:
                if path.exists():
                    remove_output_base(path)
                    shutil.rmtree(path, onerror=_make_writable_and_retry)


def _make_writable_and_retry(function: Callable[[str], object], failed: str, _info: object) -> None:
    # Bazel leaves read-only directories in an output base.
    os.chmod(os.path.dirname(failed), 0o755)
    function(failed)


def remove_output_base(checkout: Path) -> None:
    """Deletes the Bazel output base a checkout's bazel-out link points into (its server is already down)."""
    link = checkout / "bazel-out"
    if not link.is_symlink():
        return
    output_base = link.resolve().parents[2]  # <output base>/execroot/_main/bazel-out
    if not re.fullmatch(
        r"[0-9a-f]{32}", output_base.name
    ):  # Bazel names it by the md5 of the checkout path
        print(
            f"reproducible_build: not removing {output_base}: not a Bazel output base",
            file=sys.stderr,
        )
        return
    shutil.rmtree(output_base, onerror=_make_writable_and_retry)


def bazel_build(bazel: list[str], extra: list[str]) -> Build:
    """A Build that runs `<bazel> build` in the checkout with no disk cache and reads its event file."""

    def build(checkout: Path, targets: list[str]) -> dict[str, Path]:
        events = checkout / EVENTS_FILE
        command = [
            *bazel,
            "build",
            "--disk_cache=",
            "--remote_cache=",
            "--curses=no",
            f"--build_event_json_file={events}",
            *extra,
            "--",
            *targets,
        ]
        print(f"+ (cd {checkout} && {shlex.join(command)})", flush=True)
        started = time.monotonic()
        done = subprocess.run(command, cwd=checkout, check=False)
        if done.returncode != 0:
            raise CheckError(
                f"the build in {checkout} failed (exit {done.returncode}); see its output above"
            )
        print(f"built in {checkout} in {time.monotonic() - started:.0f} s", flush=True)
        return outputs_from_events(read_events(events))

    return build


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "targets", nargs="*", help=f"Bazel labels (default: the ones in {TARGETS_FILE})"
    )
    parser.add_argument(
        "--targets-file", type=Path, default=TARGETS_FILE, help="labels, one a line"
    )
    parser.add_argument(
        "--bazel",
        default=RUN_BAZEL,
        help="command that runs Bazel in a checkout, relative to it (default: the offline %(default)s;"
        " `bazel` online, where each checkout path gets its own output base too)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--revision", default="HEAD", help="the commit to check out twice (default: %(default)s)"
    )
    which.add_argument(
        "--worktree-changes",
        action="store_true",
        help="check HEAD plus the tracked files' uncommitted edits (to try a change before committing)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep both checkouts and output bases to inspect"
    )
    parser.add_argument(
        "--build-arg", action="append", default=[], help="extra `bazel build` argument (repeatable)"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_arguments(argv)
    repo = Path.cwd()
    started = time.monotonic()
    try:
        targets = args.targets or read_targets(repo / args.targets_file)
        revision = revision_to_check(repo, args.worktree_changes, args.revision)
        parent = Path(tempfile.mkdtemp(prefix="cephaloproxy-reproducible-"))
        print(
            f"checking {' '.join(targets)} at {revision[:12]}: two builds in {parent}", flush=True
        )
        with two_checkouts(repo, revision, parent, args.keep) as checkouts:
            code, lines = check(
                checkouts, targets, bazel_build(shlex.split(args.bazel), args.build_arg)
            )
        if not args.keep:
            shutil.rmtree(parent, ignore_errors=True)
    except CheckError as error:
        print(f"reproducible_build: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines), file=sys.stdout if code == 0 else sys.stderr)
    print(
        f"reproducible_build: {time.monotonic() - started:.0f} s for both builds and the comparison"
    )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
