"""layer_builder writes reproducible layers with the owners and modes asked for."""

from __future__ import annotations

import io
import json
import marshal
import os
import tarfile
from pathlib import Path

import pytest

from image.layers import layer_builder


def build(tmp_path: Path, entries: list[dict[str, object]], name: str = "layer.tar.gz") -> Path:
    spec = tmp_path / (name + ".json")
    spec.write_text(json.dumps({"mtime": 0, "entries": entries}))
    output = tmp_path / name
    assert layer_builder.main([str(spec), str(output)]) == 0
    return output


def members(layer: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(layer, "r:gz") as archive:
        return {m.name.rstrip("/"): m for m in archive.getmembers()}


@pytest.fixture()
def sources(tmp_path: Path) -> dict[str, Path]:
    script = tmp_path / "tool.py"
    script.write_text("print('hi')\n")
    script.chmod(0o700)
    config = tmp_path / "squid.conf"
    config.write_text("http_port 3128\n")
    config.chmod(0o600)
    return {"script": script, "config": config}


def test_modes_owners_parents_and_symlinks(tmp_path: Path, sources: dict[str, Path]) -> None:
    layer = build(
        tmp_path,
        [
            {
                "type": "file",
                "path": "/usr/local/bin/tool.py",
                "src": str(sources["script"]),
                "mode": "auto",
            },
            {
                "type": "file",
                "path": "/etc/squid/squid.conf.default",
                "src": str(sources["config"]),
                "mode": "auto",
            },
            {"type": "dir", "path": "/var/log/squid", "uid": 1000, "gid": 0, "mode": "0770"},
            {"type": "symlink", "path": "/usr/bin/python3", "target": "python3.13"},
        ],
    )
    found = members(layer)
    assert found["usr/local/bin/tool.py"].mode == 0o755  # any x bit -> 0755
    assert found["etc/squid/squid.conf.default"].mode == 0o644  # umask-independent
    log = found["var/log/squid"]
    assert (log.isdir(), log.uid, log.gid, log.mode) == (True, 1000, 0, 0o770)
    assert found["var/log"].mode == 0o755 and found["var/log"].uid == 0  # parents added
    assert found["usr/bin/python3"].issym() and found["usr/bin/python3"].linkname == "python3.13"
    assert all(m.mtime == 0 and m.uname == "" for m in found.values())
    assert list(found) == sorted(found)


def test_same_inputs_give_identical_bytes(tmp_path: Path, sources: dict[str, Path]) -> None:
    entries = [{"type": "file", "path": "a/b.py", "src": str(sources["script"]), "mode": "auto"}]
    first = build(tmp_path, entries, "one.tar.gz")
    os.utime(sources["script"], (1, 1))  # a different mtime must not leak in
    second = build(tmp_path, list(reversed(entries)), "two.tar.gz")
    assert first.read_bytes() == second.read_bytes()


def test_conflicting_duplicates_are_rejected(
    tmp_path: Path, sources: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.json"
    spec.write_text(
        json.dumps(
            {
                "entries": [
                    {"type": "dir", "path": "/x", "mode": "0755"},
                    {"type": "dir", "path": "/x", "mode": "0700"},
                ]
            }
        )
    )
    assert layer_builder.main([str(spec), str(tmp_path / "out.tar.gz")]) == 1
    assert "/x is given twice" in capsys.readouterr().err
    assert not (tmp_path / "out.tar.gz").exists()


def test_paths_escaping_the_root_are_rejected(
    tmp_path: Path, sources: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.json"
    spec.write_text(
        json.dumps(
            {"entries": [{"type": "file", "path": "../etc/passwd", "src": str(sources["config"])}]}
        )
    )
    assert layer_builder.main([str(spec), str(tmp_path / "out.tar.gz")]) == 1
    assert "contains '..'" in capsys.readouterr().err


def test_missing_source_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bad.json"
    spec.write_text(
        json.dumps({"entries": [{"type": "file", "path": "/a", "src": str(tmp_path / "nope")}]})
    )
    assert layer_builder.main([str(spec), str(tmp_path / "out.tar.gz")]) == 1
    assert "nope" in capsys.readouterr().err


def test_gzip_mode_compresses_plain_tars_and_passes_gzip_through(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as archive:
        archive.add(sources["config"], arcname="etc/squid.conf")
    zipped = tmp_path / "plain.tar.gz"
    assert layer_builder.main(["--gzip", str(plain), str(zipped)]) == 0
    assert zipped.read_bytes()[:2] == b"\x1f\x8b"
    assert "etc/squid.conf" in members(zipped)
    again = tmp_path / "again.tar.gz"
    assert layer_builder.main(["--gzip", str(zipped), str(again)]) == 0
    assert again.read_bytes() == zipped.read_bytes()


def test_link_duplicates_keeps_the_longest_name_as_the_file(tmp_path: Path) -> None:
    interpreter = tmp_path / "python3.13"
    interpreter.write_bytes(b"\x7fELF interpreter")
    interpreter.chmod(0o755)
    copy = tmp_path / "python3"
    copy.write_bytes(interpreter.read_bytes())
    copy.chmod(0o755)
    other = tmp_path / "other"
    other.write_bytes(b"\x7fELF different!!")  # same size, other bytes: stays a file
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "link_duplicates": True,
                "entries": [
                    {"type": "file", "path": "usr/bin/python3", "src": str(copy)},
                    {"type": "file", "path": "usr/bin/python3.13", "src": str(interpreter)},
                    {"type": "file", "path": "usr/bin/other", "src": str(other)},
                    {
                        "type": "file",
                        "path": "usr/lib/x/python3.13",
                        "src": str(interpreter),
                    },  # other dir: a file
                    {"type": "file", "path": "usr/lib/a/__init__.py", "src": str(empty)},
                    {"type": "file", "path": "usr/lib/a/py.typed", "src": str(empty)},
                ],
            }
        )
    )
    output = tmp_path / "out.tar.gz"
    assert layer_builder.main([str(spec), str(output)]) == 0
    found = members(output)
    assert found["usr/bin/python3"].issym() and found["usr/bin/python3"].linkname == "python3.13"
    assert found["usr/bin/python3.13"].isfile() and found["usr/bin/other"].isfile()
    assert found["usr/lib/x/python3.13"].isfile()
    assert found["usr/lib/a/__init__.py"].isfile() and found["usr/lib/a/py.typed"].isfile()


def test_exclude_rules_apply_below_the_prefix(tmp_path: Path, sources: dict[str, Path]) -> None:
    rules = tmp_path / "rules"
    rules.write_text("# comment\n-bin/idle*\n+share/keep/**\n-share/**\n")
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "exclude_rules": str(rules),
                "exclude_prefix": "usr",
                "entries": [
                    {"type": "file", "path": "usr/bin/idle3", "src": str(sources["script"])},
                    {"type": "file", "path": "usr/bin/python3.13", "src": str(sources["script"])},
                    {"type": "file", "path": "usr/share/man/x.1", "src": str(sources["config"])},
                    {"type": "file", "path": "usr/share/keep/y", "src": str(sources["config"])},
                    {
                        "type": "file",
                        "path": "bin/idle3",
                        "src": str(sources["script"]),
                    },  # outside the prefix
                ],
            }
        )
    )
    output = tmp_path / "out.tar.gz"
    assert layer_builder.main([str(spec), str(output)]) == 0
    assert set(n for n, m in members(output).items() if not m.isdir()) == {
        "usr/bin/python3.13",
        "usr/share/keep/y",
        "bin/idle3",
    }


def test_filter_drops_members_keeps_needed_dirs_and_metadata(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    source = tmp_path / "in.tar"
    with tarfile.open(source, "w") as archive:
        for name, kind in [
            ("./usr/", "d"),
            ("./usr/share/", "d"),
            ("./usr/share/doc/", "d"),
            ("./usr/share/doc/libc6/", "d"),
            ("./usr/share/doc/libc6/copyright", "f"),
            ("./usr/share/doc/libc6/changelog.gz", "f"),
            ("./usr/share/man/", "d"),
            ("./usr/share/man/man8/", "d"),
            ("./usr/share/man/man8/a.8.gz", "f"),
        ]:
            info = tarfile.TarInfo(name)
            info.mtime = 1234
            info.uid = 7
            if kind == "d":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = 3
                archive.addfile(info, io.BytesIO(b"abc"))
    rules = tmp_path / "rules"
    rules.write_text("+usr/share/doc/*/copyright\n-usr/share/doc/**\n-usr/share/man/**\n")
    output = tmp_path / "out.tar.gz"
    assert layer_builder.main(["--filter", str(rules), str(source), str(output)]) == 0
    found = members(output)
    assert sorted(found) == [
        "./usr",
        "./usr/share",
        "./usr/share/doc",
        "./usr/share/doc/libc6",
        "./usr/share/doc/libc6/copyright",
    ]
    kept = found["./usr/share/doc/libc6/copyright"]
    assert (kept.mtime, kept.uid, kept.size) == (1234, 7, 3)
    again = tmp_path / "again.tar.gz"
    assert layer_builder.main(["--filter", str(rules), str(source), str(again)]) == 0
    assert again.read_bytes() == output.read_bytes()


def test_filter_refuses_a_hard_link_to_a_dropped_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.tar"
    with tarfile.open(source, "w") as archive:
        info = tarfile.TarInfo("usr/share/man/a")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"a"))
        link = tarfile.TarInfo("usr/bin/a")
        link.type = tarfile.LNKTYPE
        link.linkname = "usr/share/man/a"
        archive.addfile(link)
    rules = tmp_path / "rules"
    rules.write_text("-usr/share/man/**\n")
    assert (
        layer_builder.main(["--filter", str(rules), str(source), str(tmp_path / "out.tar.gz")]) == 1
    )
    assert "hard link" in capsys.readouterr().err
    assert not (tmp_path / "out.tar.gz").exists()


def _bytecode_spec(tmp_path: Path, sources: dict[str, Path], cache_tag: str) -> Path:
    package = tmp_path / "pkg"
    package.mkdir(exist_ok=True)
    (package / "greet.py").write_text(
        "def where():\n    return __file__\n\nVALUE = 'from source'\n"
    )
    (package / "broken.py").write_text("def (:\n")  # not Python: no bytecode, no failure
    spec = tmp_path / "bytecode.json"
    spec.write_text(
        json.dumps(
            {
                "bytecode": {"cache_tag": cache_tag, "under": ["usr/lib/app"]},
                "entries": [
                    {
                        "type": "file",
                        "path": "usr/lib/app/mod/greet.py",
                        "src": str(package / "greet.py"),
                        "mode": "0644",
                    },
                    {
                        "type": "file",
                        "path": "usr/lib/app/mod/broken.py",
                        "src": str(package / "broken.py"),
                        "mode": "0644",
                    },
                    {
                        "type": "file",
                        "path": "usr/local/bin/tool.py",
                        "src": str(sources["script"]),
                    },  # outside `under`
                ],
            }
        )
    )
    return spec


def test_bytecode_is_compiled_for_the_image_and_used_by_python(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    import subprocess
    import sys

    spec = _bytecode_spec(tmp_path, sources, sys.implementation.cache_tag)
    output = tmp_path / "out.tar.gz"
    assert layer_builder.main([str(spec), str(output)]) == 0
    found = members(output)
    pyc = f"usr/lib/app/mod/__pycache__/greet.{sys.implementation.cache_tag}.pyc"
    assert found[pyc].isfile() and found[pyc].mode == 0o644 and found[pyc].mtime == 0
    assert found["usr/lib/app/mod/__pycache__"].isdir()
    assert not [name for name in found if "broken." in name and name.endswith(".pyc")]
    assert not [name for name in found if name.startswith("usr/local/bin/__pycache__")]

    root = tmp_path / "root"
    with tarfile.open(output, "r:gz") as archive:
        archive.extractall(root, filter="data")
    # Unchecked-hash bytecode is used as is: a changed source is not even read, so the value
    # proves the import ran the layer's .pyc (and -B writes no new one).
    (root / "usr/lib/app/mod/greet.py").write_text("VALUE = 'recompiled'\n")
    done = subprocess.run(
        [sys.executable, "-B", "-c", "import greet; print(greet.VALUE)"],
        cwd=root / "usr/lib/app/mod",
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(root / "usr/lib/app/mod"), "PATH": os.environ.get("PATH", "")},
    )
    assert done.stdout.strip() == "from source"
    # The code names the image path (tracebacks in the container), not the build sandbox.
    code = marshal.loads((root / pyc).read_bytes()[16:])
    assert code.co_filename == "/usr/lib/app/mod/greet.py"


def test_bytecode_is_reproducible(tmp_path: Path, sources: dict[str, Path]) -> None:
    import sys

    spec = _bytecode_spec(tmp_path, sources, sys.implementation.cache_tag)
    first, second = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    assert layer_builder.main([str(spec), str(first)]) == 0
    assert layer_builder.main([str(spec), str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()


def test_bytecode_for_another_python_is_refused(
    tmp_path: Path, sources: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    spec = _bytecode_spec(tmp_path, sources, "cpython-39")
    output = tmp_path / "out.tar.gz"
    assert layer_builder.main([str(spec), str(output)]) == 1
    error = capsys.readouterr().err
    assert (
        "cpython-39" in error
        and sys.implementation.cache_tag in error
        and "same Python minor version" in error
    )
    assert not output.exists()


def test_bytecode_compiler_failures_name_the_cause(tmp_path: Path) -> None:
    with pytest.raises(
        layer_builder.SpecError, match="compiling bytecode failed: FileNotFoundError"
    ):
        layer_builder.compile_bytecode([(str(tmp_path / "gone.py"), "/usr/lib/app/gone.py")])
