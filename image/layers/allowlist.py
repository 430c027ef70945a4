"""Checks an image's merged filesystem against an allowlist of paths (allowlist.txt).

Pure logic over a layer listing (oci_layout.Image): what is not allowed, of
the wrong kind, a `#!` script whose interpreter the image lacks, or a symlink
to nothing is a violation. //image:contents_test runs it on the built layers;
allowlist_test.py on synthetic layers that carry each file the image must not.
"""

from __future__ import annotations

import posixpath
import stat
from pathlib import Path

from image.layers import path_rules
from image.layers.oci_layout import Entry, Image

KINDS = "dfxl"
# Where `#!/usr/bin/env NAME` would look for NAME: the image's PATH.
IMAGE_PATH = ("/usr/local/bin", "/usr/sbin", "/usr/bin")
DEFAULT_ALLOWLIST = Path(__file__).with_name("allowlist.txt")


def parse(lines: list[str]) -> list[path_rules.Rule]:
    """'KINDS GLOB' lines (KINDS from d, f, x, l, or '-' to forbid); '#' comments."""
    rules: list[path_rules.Rule] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2 or not (fields[0] == "-" or set(fields[0]) <= set(KINDS)):
            raise path_rules.RuleError(
                f"allowlist line {number}: {raw!r}: write 'KINDS GLOB' with KINDS from {KINDS!r}, or '- GLOB'"
            )
        path_rules.compile_glob(fields[1])
        rules.append(path_rules.Rule(glob=fields[1], verdict=fields[0], line=number))
    return rules


def load(path: Path = DEFAULT_ALLOWLIST) -> list[path_rules.Rule]:
    return parse(path.read_text(encoding="utf-8").splitlines())


def kind_letter(image: Image, entry: Entry) -> str:
    if entry.kind == "dir":
        return "d"
    if entry.kind == "symlink":
        return "l"
    if entry.kind in ("file", "hardlink"):
        return "x" if entry.mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) else "f"
    return "?"


def first_line(path: str, data: bytes) -> bytes | None:
    """The inspect_file callback for load_image: a `#!` file's first line."""
    return data.split(b"\n", 1)[0] if data.startswith(b"#!") else None


def _is_executable_file(image: Image, path: str) -> bool:
    real = image.resolve(path)
    entry = image.entries.get(real or "")
    return entry is not None and entry.kind in ("file", "hardlink") and bool(entry.mode & 0o111)


def _link_target_exists(image: Image, link: Entry) -> bool:
    """The link's target is in the image, as an entry or as a directory that
    the layers only imply (entries below it, no entry of its own)."""
    if image.resolve(link.path) is not None:
        return True
    target = posixpath.normpath(posixpath.join(posixpath.dirname(link.path), link.linkname))
    parent = image.resolve(posixpath.dirname(target)) or posixpath.dirname(target)
    prefix = posixpath.join(parent, posixpath.basename(target)) + "/"
    return any(name.startswith(prefix) for name in image.entries)


def shebang_problem(image: Image, entry: Entry, line: bytes) -> str | None:
    """Why this `#!` line names no interpreter the image has, or None.

    An executable script needs its interpreter at the exact path (the kernel
    runs it). A non-executable file cannot be run by exec, so its line is a
    comment; `#!/usr/bin/env NAME` there is accepted when NAME is on the
    image's PATH (stdlib modules say `#!/usr/bin/env python3`).
    """
    words = line[2:].decode("utf-8", "replace").split()
    if not words:
        return "has an empty #! line"
    interpreter = words[0]
    if _is_executable_file(image, interpreter):
        return None
    executable = bool(entry.mode & 0o111)
    if not executable and posixpath.basename(interpreter) == "env" and len(words) > 1:
        if any(_is_executable_file(image, posixpath.join(d, words[1])) for d in IMAGE_PATH):
            return None
    return f"starts with {line.decode('utf-8', 'replace')!r}, but {interpreter} is not an executable file in the image"


def decide(
    rules: list[path_rules.Rule], path: str, letter: str
) -> tuple[str, path_rules.Rule | None]:
    """The first rule that forbids the path or allows its kind decides; a
    matching rule for other kinds only explains a refusal (a directory that
    only such rules match is judged by what is below it)."""
    wrong_kind: path_rules.Rule | None = None
    for rule in rules:
        if not rule.matches(path):
            continue
        if rule.verdict == "-":
            return "forbidden", rule
        if letter in rule.verdict:
            return "allowed", rule
        wrong_kind = wrong_kind or rule
    return ("wrong kind", wrong_kind) if wrong_kind else ("unlisted", None)


def check(image: Image, rules: list[path_rules.Rule]) -> list[str]:
    """Every violation, one line each, sorted by path; [] when the image is clean.

    image.file_facts must hold first_line() results (load the image with
    inspect_file=first_line, inspect_prefix_bytes=b"#!")."""
    problems: dict[str, str] = {}
    allowed: set[str] = set()
    unnamed_dirs: list[str] = []
    for path, entry in sorted(image.entries.items()):
        letter = kind_letter(image, entry)
        verdict, rule = decide(rules, path, letter)
        if verdict == "allowed":
            allowed.add(path)
        elif verdict == "forbidden" and rule is not None:
            problems[path] = f"is forbidden (allowlist line {rule.line}: - {rule.glob})"
        elif verdict == "wrong kind" and rule is not None and letter != "d":
            problems[path] = (
                f"is a {entry.kind} (mode {oct(stat.S_IMODE(entry.mode))}), but allowlist line {rule.line} "
                f"allows only {rule.verdict!r} for {rule.glob}"
            )
        elif letter == "d":
            unnamed_dirs.append(path)
        else:
            problems[path] = "is not in the allowlist"
        if entry.kind == "symlink" and not _link_target_exists(image, entry):
            problems[path] = f"is a symlink to {entry.linkname}, which is not in the image"
    for path, line in image.file_facts.items():
        if isinstance(line, bytes) and path in image.entries:
            problem = shebang_problem(image, image.entries[path], line)
            if problem:
                problems[path] = problem
    # A directory no rule names is fine while it leads to something allowed.
    ancestors = {str(parent) for path in allowed for parent in Path(path).parents}
    for path in unnamed_dirs:
        if path not in ancestors:
            problems[path] = "is a directory with nothing allowed below it"
    return [f"{path} {problems[path]}" for path in sorted(problems)]
