"""The suite fails, by assertion, on an image with a planted defect (issue 23's "Done when").

Each case derives a broken docker-archive from the image under test
(tests/support/image_defects.py: its own tag, the real layers otherwise), runs one named
case of this suite against it in a nested pytest with the same engine, and expects that
case to fail with an AssertionError, not to skip or error out for another reason.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.acceptance.conftest import run_nested_pytest
from tests.support import image_defects, image_source, timeouts
from tests.support.runtime import ContainerRuntime

NESTED_TIMEOUT_S = 600.0  # a load of the copy plus one case; scaled like every wait


@pytest.fixture(scope="module")
def real_tarball(
    container_runtime: ContainerRuntime,
    image_choice: image_source.ImageChoice,
    image_ref: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The image under test as a docker-archive: the given tarball, or `save` of the given reference."""
    if image_choice.tarball is not None:
        return image_choice.tarball
    destination = tmp_path_factory.mktemp("saved") / "image.tar"
    container_runtime.save(image_ref, destination)
    return destination


def run_case_against(tarball: Path, case: str) -> subprocess.CompletedProcess[str]:
    """One case of this suite against `tarball`, in a nested pytest with this run's engine settings."""
    changes = {
        image_source.IMAGE_ENV: None,
        image_source.TARBALL_ENV: str(tarball),
        image_source.REQUIRE_ENV: "1",
    }
    return run_nested_pytest(case, changes, timeout=timeouts.scaled(NESTED_TIMEOUT_S))


def assert_fails_by_assertion(done: subprocess.CompletedProcess[str], expected: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 1, (
        f"the defect went unnoticed (pytest exit {done.returncode}):\n{output[-4000:]}"
    )
    assert "1 failed" in output and "error" not in output.splitlines()[-1], output[-4000:]
    assert "AssertionError" in output or "assert " in output, output[-4000:]
    assert expected in output, f"{expected!r} not in the failure:\n{output[-4000:]}"


PLANTED: dict[str, tuple[Callable[[Path, Path], Path], str, str]] = {
    # A root image: the config case names the wrong USER.
    "user-0": (
        lambda source, target: image_defects.with_user(source, target, "0"),
        "tests/acceptance/acceptance_test.py::test_image_runs_as_non_root_with_exec_form_python_entrypoint",
        "assert '0' == '1000'",
    ),
    # A runtime module the entrypoint imports at start is gone: the default run never gets ready.
    "no-settings-module": (
        lambda source, target: image_defects.without_paths(
            source, target, ["/usr/lib/cephaloproxy/entrypoint/settings.py"]
        ),
        "tests/acceptance/default_run_test.py::test_default_run",
        "never became ready",
    ),
}


@pytest.mark.parametrize("defect", sorted(PLANTED))
def test_a_planted_defect_fails_the_suite(
    defect: str, real_tarball: Path, container_runtime: ContainerRuntime, tmp_path: Path
) -> None:
    plant, case, expected = PLANTED[defect]
    broken = plant(real_tarball, tmp_path / f"{defect}.tar")
    try:
        done = run_case_against(broken, case)
    finally:
        for tag in image_source.repo_tags_in_tarball(broken):
            container_runtime.remove_image(tag)
    assert_fails_by_assertion(done, expected)
