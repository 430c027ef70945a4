"""The layer writers, run as Bazel runs them, give the same bytes whatever the host's state."""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from image.layers import layer_builder, layer_diff

# The directory that holds image/layers/layer_builder.py (the runfiles root under Bazel).
ROOT = Path(os.path.abspath(layer_builder.__file__)).parents[2]
# Runs MODULE's main(ARGS) in a new process, as the build's actions do; `import functools` first,
# so a writer that compiled bytecode in its own process would do it in the state the test set up.
LAUNCHER = "import functools, importlib, sys; sys.exit(importlib.import_module(sys.argv[1]).main(sys.argv[2:]))"
BUILDER, SBOM = "image.layers.layer_builder", "image.sbom.spdx_sbom"
CACHE_TAG = sys.implementation.cache_tag


def run_writer(
    module: str,
    args: list[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    umask: int = 0o022,
) -> None:
    """MODULE's main(ARGS) in a fresh interpreter with only env (and PYTHONPATH) set."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **(env or {}),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, module, *args],
        env=environment,
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=lambda: os.umask(umask),
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
    pyc = Path(
        str(prefix)
        + importlib.util.cache_from_source(module_file).replace(os.sep + "__pycache__", "")
    )
    assert pyc.is_file(), f"no warm .pyc at {pyc}"
    return pyc


def test_bytecode_does_not_depend_on_the_builders_pycache(tmp_path: Path) -> None:
    """Issue 28: the stdlib's functools.pyc differed between a build whose builder had loaded
    functools from a warm rules_python pycache and one with that cache empty."""
    stdlib_functools = functools.__file__
    source = tmp_path / "functools.py"  # a copy of the running interpreter's own functools
    source.write_bytes(Path(stdlib_functools).read_bytes())
    spec = write_spec(
        tmp_path / "spec.json",
        {
            "bytecode": {"cache_tag": CACHE_TAG, "under": ["usr/lib/python"]},
            "entries": [
                {
                    "type": "file",
                    "path": "usr/lib/python/functools.py",
                    "src": str(source),
                    "mode": "0644",
                }
            ],
        },
    )
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    warm_pycache(warm, stdlib_functools)
    cold.mkdir()
    run_writer(
        BUILDER, [str(spec), str(tmp_path / "warm.tar.gz")], {"PYTHONPYCACHEPREFIX": str(warm)}
    )
    run_writer(
        BUILDER, [str(spec), str(tmp_path / "cold.tar.gz")], {"PYTHONPYCACHEPREFIX": str(cold)}
    )
    pyc = f"usr/lib/python/__pycache__/functools.{CACHE_TAG}.pyc"
    with tarfile.open(tmp_path / "cold.tar.gz") as archive:
        assert pyc in archive.getnames()
    assert (tmp_path / "warm.tar.gz").read_bytes() == (tmp_path / "cold.tar.gz").read_bytes()


@dataclass(frozen=True)
class Host:
    """What differs between build machines and must not reach any output."""

    umask: int = 0o022
    env: tuple[tuple[str, str], ...] = (("LC_ALL", "C.UTF-8"), ("TZ", "UTC"), ("HOME", "/root"))
    elsewhere: bool = False  # run from another working directory
    reverse: bool = False  # create the input files in the other order
    time: int = 1_000_000_000  # the input files' mtime (their atime is a week later)
    owner: int = 0  # the input files' uid and gid, when the test may chown


ENVIRONMENTS = [
    Host().env,
    # An ASCII locale without UTF-8 mode: tarfile's default encoding becomes ascii.
    (
        ("LANG", "C"),
        ("LC_ALL", "C"),
        ("PYTHONUTF8", "0"),
        ("TZ", "America/Los_Angeles"),
        ("HOME", "/nonexistent"),
    ),
    (("LANG", "POSIX"), ("TZ", "Asia/Kolkata"), ("HOME", "/tmp")),
    (("TZ", "Pacific/Kiritimati"),),  # no locale, no HOME
    # Python's own knobs: asserts stripped (-O), another hash seed, no bytecode cache.
    (
        ("LC_ALL", "C.UTF-8"),
        ("PYTHONOPTIMIZE", "1"),
        ("PYTHONHASHSEED", "4242"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
    ),
]
hosts = st.builds(
    Host,
    umask=st.sampled_from([0o022, 0o077, 0o002]),
    env=st.sampled_from(ENVIRONMENTS),
    elsewhere=st.booleans(),
    reverse=st.booleans(),
    time=st.sampled_from([0, 1_000_000_000, 2_000_000_000]),
    owner=st.sampled_from([0, 1000, 65534]),
)


def tar_of(members: list[tuple[str, bytes]], tar_format: int) -> bytes:
    """A fixed tar (as //squid:layer or a .deb's data would be) of files with fixed metadata."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tar_format, encoding="utf-8") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uname, info.gname = (
                len(data),
                0o644,
                1_600_000_000,
                "root",
                "root",
            )
            archive.addfile(info, io.BytesIO(data))
    return raw.getvalue()


SBOM_FACTS = {
    "project": {
        "name": "cephaloproxy",
        "source_url": "https://github.com/cephaloproxy/cephaloproxy",
        "license": "GPL-2.0-or-later",
    },
    "squid": {
        "version": "7.7",
        "sha256": "e3" * 32,
        "urls": ["https://example.org/squid-7.7.tar.xz"],
        "configure_flags": ["--with-openssl"],
    },
    "python": {"version_info": "3.13.9", "interpreter": "/usr/bin/python3"},
}
SBOM_LOCK = {
    "packages": [
        {
            "arch": "amd64",
            "name": name,
            "version": version,
            "sha256": digit * 64,
            "urls": [f"https://snapshot.debian.org/pool/{name}_{version}_amd64.deb"],
        }
        for name, version, digit in [
            ("tzdata", "2026f-0+deb13u1", "2"),
            ("libstdc++6", "14.2.0-19", "1"),
        ]
    ]
}
# The writers' inputs, relative to a per-build directory: what the build hands the actions.
INPUTS: dict[str, bytes] = {
    "src/tool.py": b"#!/usr/bin/python3\nprint('hi')\n",
    "src/squid.conf": b"http_port 3128\n",
    "src/app/__init__.py": b"",
    "src/app/greet.py": b'"""Docstring."""\nimport os\n\ndef known(name):\n    assert name\n    return name in {"alpha", "beta", "gamma", "delta"}\n',
    "src/lib/libx.so.1.0": b"\x7fELF not really\n",
    "src/lib/libx.so": b"\x7fELF not really\n",
    "src/doc/notes.md": b"dropped by the exclude rules\n",
    "src/doc/cafe.txt": b"its image path is not ASCII\n",
    "exclude.rules": b"- doc/*.md\n",
    "filter.rules": b"- usr/share/doc/**\n",
    "plain.tar": tar_of(
        [("usr/sbin/squid", b"squid"), ("usr/share/doc/squid/README", b"doc")], tarfile.PAX_FORMAT
    ),
    "gnu.tar": tar_of(
        [("usr/sbin/squid", b"squid"), ("usr/lib/caf\u00e9.so", b"lib"), ("usr/share/doc/x", b"x")],
        tarfile.GNU_FORMAT,
    ),
    "facts.json": json.dumps(SBOM_FACTS).encode(),
    "lock.json": json.dumps(SBOM_LOCK).encode(),
    "stamp.txt": b"version=1.2.3\nrevision=0123abc\ncreated=2026-12-07T00:00:00Z\n",
}
EXECUTABLE = {"src/tool.py"}


def layer_spec(inputs: Path) -> dict[str, object]:
    """Every kind of entry the rules write, with sources below inputs."""
    long_dir = "usr/share/" + "/".join(
        ["deep-directory-name"] * 6
    )  # > 100 bytes: a pax path record
    return {
        "mtime": 0,
        "exclude_rules": str(inputs / "exclude.rules"),
        "exclude_prefix": "usr/share",
        "link_duplicates": True,
        "bytecode": {"cache_tag": CACHE_TAG, "under": ["usr/lib/app"]},
        "entries": [
            {"type": "file", "path": "usr/local/bin/tool.py", "src": str(inputs / "src/tool.py")},
            {"type": "file", "path": "etc/squid/squid.conf", "src": str(inputs / "src/squid.conf")},
            {
                "type": "file",
                "path": "usr/lib/app/__init__.py",
                "src": str(inputs / "src/app/__init__.py"),
            },
            {
                "type": "file",
                "path": "usr/lib/app/greet.py",
                "src": str(inputs / "src/app/greet.py"),
            },
            {
                "type": "file",
                "path": "usr/lib/libx.so.1.0",
                "src": str(inputs / "src/lib/libx.so.1.0"),
            },
            {"type": "file", "path": "usr/lib/libx.so", "src": str(inputs / "src/lib/libx.so")},
            {
                "type": "file",
                "path": "usr/share/doc/notes.md",
                "src": str(inputs / "src/doc/notes.md"),
            },
            {
                "type": "file",
                "path": "usr/share/doc/caf\u00e9.txt",
                "src": str(inputs / "src/doc/cafe.txt"),
            },
            {
                "type": "file",
                "path": f"{long_dir}/file.txt",
                "src": str(inputs / "src/squid.conf"),
                "mode": "0640",
            },
            {"type": "dir", "path": "var/log/squid", "uid": 1000, "gid": 0, "mode": "0770"},
            {"type": "symlink", "path": "usr/bin/tool", "target": "../local/bin/tool.py"},
        ],
    }


def create_inputs(inputs: Path, host: Host) -> None:
    """Writes INPUTS as this host would: its umask, its order, its clock and its owners."""
    old_umask = os.umask(host.umask)
    try:
        for name in sorted(INPUTS, reverse=host.reverse):
            path = inputs / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(INPUTS[name])
            if name in EXECUTABLE:
                path.chmod(0o777 & ~host.umask)
        (inputs / "spec.json").write_text(json.dumps(layer_spec(inputs)))
    finally:
        os.umask(old_umask)
    for path in sorted(inputs.rglob("*")):
        os.utime(path, (host.time + 7 * 86400, host.time))
        if os.geteuid() == 0:
            os.chown(path, host.owner, host.owner)


def build_all(host: Host) -> dict[str, bytes]:
    """Every writer's output for the same inputs, on this host, named by writer."""
    with tempfile.TemporaryDirectory(prefix="repro-") as scratch:
        inputs, out = Path(scratch, "inputs"), Path(scratch, "out")
        create_inputs(inputs, host)
        out.mkdir()
        runs = {
            "layer.tar.gz": (BUILDER, [str(inputs / "spec.json"), str(out / "layer.tar.gz")]),
            "gzip.tar.gz": (
                BUILDER,
                ["--gzip", str(inputs / "plain.tar"), str(out / "gzip.tar.gz")],
            ),
            "filter.tar.gz": (
                BUILDER,
                [
                    "--filter",
                    str(inputs / "filter.rules"),
                    str(inputs / "gnu.tar"),
                    str(out / "filter.tar.gz"),
                ],
            ),
            "sbom.spdx.json": (
                SBOM,
                [
                    "--lock",
                    str(inputs / "lock.json"),
                    "--arch",
                    "amd64",
                    "--facts",
                    str(inputs / "facts.json"),
                    "--stamp",
                    str(inputs / "stamp.txt"),
                    "--output",
                    str(out / "sbom.spdx.json"),
                ],
            ),
        }
        cwd = inputs if host.elsewhere else None
        for module, args in runs.values():
            run_writer(module, args, dict(host.env), cwd=cwd, umask=host.umask)
        outputs = {name: (out / name).read_bytes() for name in runs}
        return outputs


@functools.cache
def reference() -> dict[str, bytes]:
    return build_all(Host())


def first_difference(name: str, expected: bytes, actual: bytes) -> str:
    """layer_diff's report for a layer, the first differing line for the SBOM."""
    if not name.endswith(".tar.gz"):
        pairs = zip(expected.decode().splitlines(), actual.decode().splitlines())
        return next((f"{a!r} vs {b!r}" for a, b in pairs if a != b), "lengths differ")
    with tempfile.TemporaryDirectory() as scratch:
        first, second = Path(scratch, "reference"), Path(scratch, "this-host")
        first.write_bytes(expected)
        second.write_bytes(actual)
        return "\n".join(layer_diff.compare_layers(first, second))


def test_the_reference_build_holds_what_the_writers_were_asked_for() -> None:
    """The outputs compared below are real: bytecode, parents, pax paths, the filtered tar, the SBOM."""
    outputs = reference()
    with tarfile.open(fileobj=io.BytesIO(outputs["layer.tar.gz"])) as archive:
        names = archive.getnames()
    assert (
        f"usr/lib/app/__pycache__/greet.{CACHE_TAG}.pyc" in names
        and "usr/share/doc/caf\u00e9.txt" in names
    )
    assert "usr/share/doc/notes.md" not in names and any(len(n) > 100 for n in names)
    with tarfile.open(fileobj=io.BytesIO(outputs["filter.tar.gz"]), encoding="utf-8") as archive:
        assert archive.getnames() == ["usr/sbin/squid", "usr/lib/caf\u00e9.so"]
    assert (
        json.loads(outputs["sbom.spdx.json"])["creationInfo"]["created"] == "2026-12-07T00:00:00Z"
    )


def every_environment(test: Callable[[Host], None]) -> Callable[[Host], None]:
    """Each environment at least once, each with other odd conditions, whatever Hypothesis draws."""
    for number, env in enumerate(ENVIRONMENTS):
        test = example(
            host=Host(
                umask=0o077, env=env, elsewhere=True, reverse=number % 2 == 0, time=0, owner=1000
            )
        )(test)
    return test


@settings(max_examples=8)
@given(host=hosts)
@every_environment
def test_outputs_do_not_depend_on_the_host(host: Host) -> None:
    expected, actual = reference(), build_all(host)
    for name in expected:
        assert actual[name] == expected[name], (
            f"{name} differs on {host}:\n{first_difference(name, expected[name], actual[name])}"
        )
