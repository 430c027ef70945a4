"""Counts the container acceptance suite's cases per engine from pytest's JUnit XML (.ci/run's container stage).

Prints `LABEL: N passed, N failed, N skipped` for each file and exits 1 when a case failed,
when a case was skipped (in CI a skip is a case that never ran against the image), or when a
file is missing or holds no case (a run that never started must not look green).

Usage: python3 -m tools.ci.container_counts LABEL=JUNIT.xml [LABEL=JUNIT.xml ...]
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from tools.ci.count_test_cases import xml_counts


def verdict(label: str, junit: Path) -> tuple[str, bool]:
    """The line to print for one run, and whether that run is acceptable."""
    if not junit.is_file():
        return f"{label}: no results ({junit} missing: the run did not start or crashed)", False
    try:
        passed, failed, skipped = xml_counts(junit)
    except ElementTree.ParseError as error:
        return f"{label}: unreadable results {junit} ({error})", False
    line = f"{label}: {passed} passed, {failed} failed, {skipped} skipped"
    if passed + failed + skipped == 0:
        return f"{line} (no case ran)", False
    return line, failed == 0 and skipped == 0


def main(argv: list[str]) -> int:
    if not argv or any("=" not in arg for arg in argv):
        print("usage: container_counts.py LABEL=JUNIT.xml ...", file=sys.stderr)
        return 2
    ok = True
    for arg in argv:
        label, _, path = arg.partition("=")
        line, good = verdict(label, Path(path))
        print(line if good else f"{line}  <- FAILED")
        ok = ok and good
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
