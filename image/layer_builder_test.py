"""layer_builder writes reproducible layers with the owners and modes asked for."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from image import layer_builder


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
    layer = build(tmp_path, [
        {"type": "file", "path": "/usr/local/bin/tool.py", "src": str(sources["script"]), "mode": "auto"},
        {"type": "file", "path": "/etc/squid/squid.conf.default", "src": str(sources["config"]), "mode": "auto"},
        {"type": "dir", "path": "/var/log/squid", "uid": 1000, "gid": 0, "mode": "0770"},
        {"type": "symlink", "path": "/usr/bin/python3", "target": "python3.13"},
    ])
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


def test_conflicting_duplicates_are_rejected(tmp_path: Path, sources: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"entries": [
        {"type": "dir", "path": "/x", "mode": "0755"},
        {"type": "dir", "path": "/x", "mode": "0700"},
    ]}))
    assert layer_builder.main([str(spec), str(tmp_path / "out.tar.gz")]) == 1
    assert "/x is given twice" in capsys.readouterr().err
    assert not (tmp_path / "out.tar.gz").exists()


def test_paths_escaping_the_root_are_rejected(tmp_path: Path, sources: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"entries": [{"type": "file", "path": "../etc/passwd", "src": str(sources["config"])}]}))
    assert layer_builder.main([str(spec), str(tmp_path / "out.tar.gz")]) == 1
    assert "contains '..'" in capsys.readouterr().err


def test_missing_source_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"entries": [{"type": "file", "path": "/a", "src": str(tmp_path / "nope")}]}))
    assert layer_builder.main([str(spec), str(tmp_path / "out.tar.gz")]) == 1
    assert "nope" in capsys.readouterr().err


def test_gzip_mode_compresses_plain_tars_and_passes_gzip_through(tmp_path: Path, sources: dict[str, Path]) -> None:
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
