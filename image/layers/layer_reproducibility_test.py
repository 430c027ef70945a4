"""The layer writers, run as Bazel runs them, give the same bytes whatever the host's state."""

from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from image.layers import layer_builder

# The directory that holds image/layers/layer_builder.py (the runfiles root under Bazel).
ROOT = Path(layer_builder.__file__).resolve().parents[2]
# Runs main() in a new process, as the ImageLayer action does; `import functools` first, so a
# builder that compiles in its own process would compile in the state the test set up.
LAUNCHER = "import functools, sys; from image.layers import layer_builder; sys.exit(layer_builder.main(sys.argv[1:]))"
CACHE_TAG = sys.implementation.cache_tag


def run_builder(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, umask: int = 0o022) -> None:
    """layer_builder ARGS in a fresh interpreter with only env (and PYTHONPATH) set."""
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {}), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *args], env=environment, cwd=cwd or ROOT,
        capture_output=True, text=True, check=False, preexec_fn=lambda: os.umask(umask),
    )
    assert done.returncode == 0, done.stderr


def write_spec(path: Path, spec: dict[str, object]) -> Path:
    path.write_text(json.dumps(spec))
    return path


def warm_pycache(prefix: Path, module_file: str) -> Path:
    """Fills a PYTHONPYCACHEPREFIX the way a shared cache gets filled: another process compiles
    the module there (py_compile, as precompilers and compileall do). Returns the .pyc."""
    code = "import importlib.util, py_compile, sys; py_compile.compile(sys.argv[1], cfile=importlib.util.cache_from_source(sys.argv[1]), doraise=True)"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPYCACHEPREFIX": str(prefix)}
    subprocess.run([sys.executable, "-c", code, module_file], env=env, check=True)
    pyc = Path(str(prefix) + importlib.util.cache_from_source(module_file).replace(os.sep + "__pycache__", ""))
    assert pyc.is_file(), f"no warm .pyc at {pyc}"
    return pyc


def test_bytecode_does_not_depend_on_the_builders_pycache(tmp_path: Path) -> None:
    """Issue 28: the stdlib's functools.pyc differed between a build whose builder had loaded
    functools from a warm rules_python pycache and one with that cache empty."""
    stdlib_functools = functools.__file__
    source = tmp_path / "functools.py"  # a copy of the running interpreter's own functools
    source.write_bytes(Path(stdlib_functools).read_bytes())
    spec = write_spec(tmp_path / "spec.json", {
        "bytecode": {"cache_tag": CACHE_TAG, "under": ["usr/lib/python"]},
        "entries": [{"type": "file", "path": "usr/lib/python/functools.py", "src": str(source), "mode": "0644"}],
    })
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    warm_pycache(warm, stdlib_functools)
    cold.mkdir()
    run_builder([str(spec), str(tmp_path / "warm.tar.gz")], {"PYTHONPYCACHEPREFIX": str(warm)})
    run_builder([str(spec), str(tmp_path / "cold.tar.gz")], {"PYTHONPYCACHEPREFIX": str(cold)})
    pyc = f"usr/lib/python/__pycache__/functools.{CACHE_TAG}.pyc"
    with tarfile.open(tmp_path / "cold.tar.gz") as archive:
        assert pyc in archive.getnames()
    assert (tmp_path / "warm.tar.gz").read_bytes() == (tmp_path / "cold.tar.gz").read_bytes()
