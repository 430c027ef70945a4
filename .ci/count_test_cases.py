"""Counts the test cases in Bazel's test logs and prints the totals.

Prints `N passed, N failed, N skipped` and exits 1 when any case failed or
when no case ran at all (an empty run must not look green).
"""

import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def count(testlogs: Path) -> tuple[int, int, int]:
    passed = failed = skipped = 0
    for xml_file in sorted(testlogs.rglob("test.xml")):
        for case in ElementTree.parse(xml_file).getroot().iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
            elif case.find("skipped") is not None:
                skipped += 1
            else:
                passed += 1
    return passed, failed, skipped


def main() -> int:
    testlogs = Path(sys.argv[1] if len(sys.argv) > 1 else "bazel-testlogs")
    if not testlogs.is_dir():
        print(f"count_test_cases: {testlogs} does not exist: no test ran", file=sys.stderr)
        return 1
    passed, failed, skipped = count(testlogs.resolve())
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    if passed + failed == 0:
        print("count_test_cases: no test case ran", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
