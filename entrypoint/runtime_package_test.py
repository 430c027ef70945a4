"""The image's copy of the runtime package imports with nothing but the standard library."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# $(rootpaths //entrypoint:runtime_package_files): what the image copies to
# /usr/lib/cephaloproxy/entrypoint/ (image/BUILD.bazel's app layer).
FILES_ENV = "CEPHALOPROXY_RUNTIME_PACKAGE_FILES"


def runtime_files() -> list[Path]:
    value = os.environ.get(FILES_ENV)
    if not value:
        pytest.skip(f"{FILES_ENV} is set by Bazel (bazel test //entrypoint:runtime_package_test)")
    return [Path(p) for p in value.split()]


@pytest.fixture
def image_copy(tmp_path: Path) -> Path:
    """The package laid out as in the image: <root>/entrypoint/<module>.py, nothing else."""
    package = tmp_path / "entrypoint"
    package.mkdir()
    for source in runtime_files():
        shutil.copyfile(source, package / source.name)
    return tmp_path


def modules_of(root: Path) -> list[str]:
    return sorted(
        f"entrypoint.{p.stem}" for p in (root / "entrypoint").glob("*.py") if p.stem != "__init__"
    )


def import_in_isolation(root: Path, modules: list[str]) -> subprocess.CompletedProcess[str]:
    """Import every module in a fresh interpreter whose only non-stdlib path is root (-I: no
    PYTHONPATH, no user site, no current directory), the way the image's Python sees them."""
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    return subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(root)!r})\n{code}",
            *modules,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_runtime_module_imports_from_the_image_copy_alone(image_copy: Path) -> None:
    modules = modules_of(image_copy)
    assert "entrypoint.main" in modules and "entrypoint.healthcheck_cli" in modules
    result = import_in_isolation(image_copy, modules)
    assert result.returncode == 0, result.stderr


def test_the_isolated_import_notices_a_missing_module(image_copy: Path) -> None:
    # The check above must be able to fail: without one module the package cannot import.
    (image_copy / "entrypoint" / "settings.py").unlink()
    result = import_in_isolation(image_copy, ["entrypoint.main"])
    assert result.returncode != 0 and "settings" in result.stderr


# What entrypoint/ may hold besides the runtime package: its tests, their conftest, the
# benchmarks, and the two scripts the image puts in /usr/local/bin.
SCRIPTS = {"entrypoint.py", "healthcheck.py"}


def not_shipped_in_the_package(name: str) -> bool:
    return (
        name.endswith("_test.py")
        or name == "conftest.py"
        or name.startswith("benchmark_")
        or name in SCRIPTS
    )


def test_entrypoint_holds_only_the_runtime_package_its_scripts_tests_and_benchmarks() -> None:
    """A module here that no runtime code imports is test support in the product package, or
    dead code: either way it belongs elsewhere (tests/entrypoint/ holds the test support)."""
    sources = os.environ.get("CEPHALOPROXY_ENTRYPOINT_SOURCES")
    if not sources:
        pytest.skip("CEPHALOPROXY_ENTRYPOINT_SOURCES is set by Bazel")
    on_disk = {Path(p).name for p in sources.split()}
    shipped = {p.name for p in runtime_files()}
    assert shipped <= on_disk
    assert sorted(on_disk - shipped - {n for n in on_disk if not_shipped_in_the_package(n)}) == []


def test_the_package_holds_every_module_the_runtime_imports_and_no_test_code() -> None:
    names = {p.name for p in runtime_files()}
    assert {"__init__.py", "main.py", "health_server.py", "healthcheck_cli.py"} <= names
    assert not any(
        name.endswith("_test.py") or name in {"harness.py", "testing.py", "conftest.py"}
        for name in names
    )
