"""Every relative link in README.md and docs/*.md resolves: the file exists and so does the anchor."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("CEPHALOPROXY_DOCS_ROOT", Path(__file__).resolve().parent.parent))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [f for f in files if f.exists()]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a link there is an example, not a link)."""
    lines, in_code = [], False
    for line in text.split("\n"):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code:
            lines.append(line)
    return lines


def anchor(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(path.read_text()):
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = anchor(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    problems = []
    for line in prose_lines(path.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... not checked offline
                continue
            file_part, _, fragment = target.partition("#")
            destination = (path.parent / file_part).resolve() if file_part else path
            if not destination.exists():
                problems.append(f"{path.name}: {target}: no such file")
            elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
                problems.append(f"{path.name}: {target}: no heading with that anchor")
    return problems


def test_there_are_documents_to_check() -> None:
    assert (ROOT / "README.md").exists(), ROOT


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title\n\n## Some section\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#some-section) [ok](#here) [bad](a.md#nowhere) [gone](c.md)\n"
        "```\n[ignored](d.md)\n```\n## Here\n"
    )
    assert broken_links(page) == [
        "b.md: a.md#nowhere: no heading with that anchor",
        "b.md: c.md: no such file",
    ]
