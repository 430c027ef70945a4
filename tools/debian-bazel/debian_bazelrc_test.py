"""The offline configuration leaves out exactly the packages it explains.

tools/debian-bazel/run prints the `# offline-excluded:` reasons; Bazel obeys
--deleted_packages. If the two drift apart, the offline run either hides a
package without saying why or says why for one it still builds.
"""

import re
from pathlib import Path

_RC = Path(__file__).parent / "debian.bazelrc"


def _rc_lines() -> list[str]:
    return _RC.read_text(encoding="utf-8").splitlines()


def _explained_packages() -> list[str]:
    pattern = re.compile(r"^# offline-excluded: //(\S+): \S")
    return [m.group(1) for line in _rc_lines() if (m := pattern.match(line))]


def _deleted_packages() -> list[str]:
    values = [
        line.split("=", 1)[1]
        for line in _rc_lines()
        if line.startswith("common:debian --deleted_packages=")
    ]
    assert len(values) == 1, f"expected one --deleted_packages line in {_RC}, found {len(values)}"
    return values[0].split(",")


def test_every_left_out_package_has_a_reason_and_vice_versa() -> None:
    explained = _explained_packages()
    assert explained, f"{_RC} explains no left-out package"
    assert sorted(explained) == sorted(_deleted_packages())


def test_offline_config_hides_dev_dependencies_and_writes_no_lockfile() -> None:
    lines = set(_rc_lines())
    assert "common:debian --ignore_dev_dependency" in lines
    assert "common:debian --lockfile_mode=off" in lines
    assert "common:debian --noenable_workspace" in lines


def test_offline_tests_run_the_squid_that_ships() -> None:
    # //squid is built offline and the Squid seam stays at //squid:rootfs: a line that hid
    # //squid or switched every test to Debian's Squid would make CI test another Squid
    # than the image ships.
    assert "squid" not in _deleted_packages()
    assert not [
        line for line in _rc_lines() if "use_system_squid" in line and not line.startswith("#")
    ]
