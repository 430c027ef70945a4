"""Runs one pytest file as a Bazel test.

Bazel passes the file's runfiles path as the first argument. pytest's exit
code is the test's result; its "no tests collected" (5) stays a failure, so a
target that silently lost its tests turns red.
"""

import os
import sys

import pytest


def main() -> int:
    args = sys.argv[1:]
    if not args:
        print("pytest_main: expected the test file as the first argument", file=sys.stderr)
        return 2
    pytest_args = [*args, "-p", "no:cacheprovider", "-ra"]
    # Bazel's JUnit XML, so test results show per test case in the build UI.
    xml_path = os.environ.get("XML_OUTPUT_FILE")
    if xml_path:
        pytest_args.append(f"--junitxml={xml_path}")
    return int(pytest.main(pytest_args))


if __name__ == "__main__":
    sys.exit(main())
