"""count_test_cases against build event files and JUnit XML written here, as Bazel writes them."""

from __future__ import annotations

import json
from pathlib import Path

from tools.ci import count_test_cases

_XML = """<?xml version="1.0"?>
<testsuites><testsuite>{cases}</testsuite></testsuites>
"""


def _xml(directory: Path, name: str, passed: int = 0, failed: int = 0, skipped: int = 0) -> Path:
    cases = (
        '<testcase name="p"/>' * passed
        + '<testcase name="f"><failure message="x"/></testcase>' * failed
        + '<testcase name="s"><skipped/></testcase>' * skipped
    )
    path = directory / name / "test.xml"
    path.parent.mkdir(parents=True)
    path.write_text(_XML.format(cases=cases), encoding="utf-8")
    return path


def _events(path: Path, results: list[tuple[str, Path | None]]) -> Path:
    lines = [json.dumps({"id": {"started": {}}, "started": {"uuid": "x"}})]
    for status, xml in results:
        outputs = [{"name": "test.log", "uri": "file:///nowhere/test.log"}]
        if xml is not None:
            outputs.append({"name": "test.xml", "uri": xml.as_uri()})
        lines.append(
            json.dumps(
                {
                    "id": {"testResult": {"label": "//x:y"}},
                    "testResult": {"status": status, "testActionOutput": outputs},
                }
            )
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_counts_the_cases_of_this_invocation_only(tmp_path: Path) -> None:
    first = _xml(tmp_path, "a", passed=3, skipped=1)
    second = _xml(tmp_path, "b", passed=2)
    _xml(tmp_path, "stale", passed=100)  # left by an earlier run: not in the events
    events = _events(tmp_path / "events.json", [("PASSED", first), ("PASSED", second)])
    assert count_test_cases.count(events) == (5, 0, 1)
    assert count_test_cases.main([str(events)]) == 0


def test_failures_count_and_fail_the_run(tmp_path: Path) -> None:
    xml = _xml(tmp_path, "a", passed=1, failed=2)
    events = _events(tmp_path / "events.json", [("FAILED", xml)])
    assert count_test_cases.count(events) == (1, 2, 0)
    assert count_test_cases.main([str(events)]) == 1


def test_a_target_that_failed_without_xml_is_a_failed_case(tmp_path: Path) -> None:
    passing = _xml(tmp_path, "a", passed=1)
    events = _events(tmp_path / "events.json", [("PASSED", passing), ("TIMEOUT", None)])
    assert count_test_cases.count(events) == (1, 1, 0)


def test_a_failed_target_whose_cases_all_passed_still_fails(tmp_path: Path) -> None:
    # e.g. pytest crashed after writing the XML, or exit code 5 for "no tests collected".
    xml = _xml(tmp_path, "a", passed=2)
    events = _events(tmp_path / "events.json", [("FAILED", xml)])
    assert count_test_cases.count(events) == (2, 1, 0)


def test_no_case_at_all_fails(tmp_path: Path, capsys) -> None:
    events = _events(tmp_path / "events.json", [])
    assert count_test_cases.main([str(events)]) == 1
    assert "no test case ran" in capsys.readouterr().err


def test_a_missing_events_file_fails(tmp_path: Path) -> None:
    assert count_test_cases.main([str(tmp_path / "absent.json")]) == 1


def test_several_files_add_up(tmp_path: Path, capsys) -> None:
    one = _events(tmp_path / "one.json", [("PASSED", _xml(tmp_path, "a", passed=2))])
    two = _events(tmp_path / "two.json", [("PASSED", _xml(tmp_path, "b", passed=3, skipped=2))])
    assert count_test_cases.main([str(one), str(two)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "5 passed, 0 failed, 2 skipped"
