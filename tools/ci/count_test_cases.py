"""Counts the test cases of one Bazel invocation and prints the totals.

Reads the invocation's Build Event Protocol file (`--build_event_json_file`), so only the
results of that invocation count (cached ones included, each once per run), never a
`test.xml` left in bazel-testlogs by an earlier run. Prints `N passed, N failed, N skipped`
and exits 1 when any case failed or when no case ran at all (an empty run must not look
green). A test target that failed without writing its XML (a crash, a timeout) counts as one
failed case.

Usage: count_test_cases.py BUILD_EVENTS.json [BUILD_EVENTS.json ...]
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from urllib.parse import unquote, urlparse


def _xml_counts(xml_file: Path) -> tuple[int, int, int]:
    passed = failed = skipped = 0
    for case in ElementTree.parse(xml_file).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def count(events_file: Path) -> tuple[int, int, int]:
    passed = failed = skipped = 0
    for line in events_file.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        result = event.get("testResult")
        if result is None:
            continue
        xml_outputs = [
            out for out in result.get("testActionOutput", []) if out.get("name") == "test.xml"
        ]
        xml_path = Path(unquote(urlparse(xml_outputs[0]["uri"]).path)) if xml_outputs else None
        if xml_path is not None and xml_path.is_file():
            p, f, s = _xml_counts(xml_path)
            passed, failed, skipped = passed + p, failed + f, skipped + s
            if result.get("status") != "PASSED" and f == 0:
                failed += 1  # the target failed although every case it wrote passed
        elif result.get("status") != "PASSED":
            failed += 1
    return passed, failed, skipped


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: count_test_cases.py BUILD_EVENTS.json ...", file=sys.stderr)
        return 2
    passed = failed = skipped = 0
    for name in argv:
        events = Path(name)
        if not events.is_file():
            print(
                f"count_test_cases: {events} does not exist: that Bazel run did not start",
                file=sys.stderr,
            )
            return 1
        p, f, s = count(events)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    if passed + failed == 0:
        print("count_test_cases: no test case ran", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
