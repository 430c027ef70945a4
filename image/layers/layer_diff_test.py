"""layer_diff names the first member where two layers or two OCI layouts differ."""

from __future__ import annotations

import gzip
import json
import tarfile
import time
from pathlib import Path

import pytest

from image.layers import layer_builder, layer_diff, oci_testing


def write_layer(tmp_path: Path, name: str) -> Path:
    """A layer of a few members, written by layer_builder as the rules do."""
    (tmp_path / "squid.conf").write_text("http_port 3128\n")
    (tmp_path / "tool.py").write_text("print('hi')\n")
    spec = tmp_path / f"{name}.json"
    spec.write_text(
        json.dumps(
            {
                "mtime": 0,
                "entries": [
                    {
                        "type": "file",
                        "path": "etc/squid/squid.conf",
                        "src": str(tmp_path / "squid.conf"),
                        "mode": "0644",
                    },
                    {
                        "type": "file",
                        "path": "usr/local/bin/tool.py",
                        "src": str(tmp_path / "tool.py"),
                        "mode": "0755",
                    },
                    {"type": "symlink", "path": "usr/bin/tool", "target": "../local/bin/tool.py"},
                ],
            }
        )
    )
    output = tmp_path / f"{name}.tar.gz"
    assert layer_builder.main([str(spec), str(output)]) == 0
    return output


def diff(first: Path, second: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = layer_diff.main([str(first), str(second)])
    return code, capsys.readouterr().out


def test_identical_layers_print_the_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = write_layer(tmp_path, "a"), write_layer(tmp_path, "b")
    code, out = diff(first, second, capsys)
    assert code == 0 and out.startswith("identical sha256:")


def test_a_planted_clock_leak_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A writer that stamps one member with the time of the build: a second build an hour
    later differs, and the tool names that member and both mtimes."""
    honest = write_layer(tmp_path, "honest")
    real_tar_info = layer_builder.tar_info

    def leaky_tar_info(entry: layer_builder.Entry, mtime: int) -> tarfile.TarInfo:
        info = real_tar_info(entry, mtime)
        if entry.path == "usr/local/bin/tool.py":
            info.mtime = int(time.time())
        return info

    monkeypatch.setattr(layer_builder, "tar_info", leaky_tar_info)
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    first = write_layer(tmp_path, "first")
    monkeypatch.setattr(time, "time", lambda: 1_700_003_600.0)
    second = write_layer(tmp_path, "second")
    code, out = diff(first, second, capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].endswith(": usr/local/bin/tool.py")
    assert "mtime=1700000000" in lines[1] and "mtime=1700003600" in lines[2]
    assert "mode=0755 uid:gid=0:0" in lines[1] and "sha256=" in lines[1]
    code, out = diff(honest, first, capsys)
    assert code == 1 and "mtime=0 " in out.splitlines()[1]


def test_a_missing_member_and_a_mode_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [oci_testing.directory("etc"), oci_testing.file("etc/a", b"a")]
    first = oci_testing.write_tar(
        tmp_path / "first.tar.gz", base + [oci_testing.file("etc/b", b"b")]
    )
    second = oci_testing.write_tar(tmp_path / "second.tar.gz", base)
    code, out = diff(first, second, capsys)
    assert code == 1 and out.splitlines()[0] == "member 2 differs: etc/b vs (end of layer)"
    assert "(absent)" in out.splitlines()[2]
    umask_077 = oci_testing.write_tar(
        tmp_path / "umask.tar.gz",
        [oci_testing.directory("etc"), oci_testing.file("etc/a", b"a", 0o600)],
    )
    code, out = diff(second, umask_077, capsys)
    assert (
        code == 1
        and "mode=0644" in out
        and "mode=0600" in out
        and out.startswith("member 1 differs: etc/a")
    )


def test_same_members_with_other_compression_or_headers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = [oci_testing.file("etc/a", b"a")]
    plain = oci_testing.write_tar(tmp_path / "layer.tar", members, compress=False)
    gzipped = tmp_path / "named.tar.gz"
    with (
        gzipped.open("wb") as raw,
        gzip.GzipFile(filename="layer.tar", mode="wb", fileobj=raw, mtime=12345) as zipped,
    ):
        zipped.write(plain.read_bytes())  # the file name and time in the gzip header
    code, out = diff(plain, gzipped, capsys)
    assert code == 1 and "only the compression differs" in out
    gnu = tmp_path / "gnu.tar"
    with tarfile.open(plain) as source, tarfile.open(gnu, "w", format=tarfile.GNU_FORMAT) as sink:
        for info in source:
            sink.addfile(info, source.extractfile(info))
    code, out = diff(plain, gnu, capsys)
    assert code == 1 and "tar headers differ" in out


def test_layouts_name_the_layer_then_the_member(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = oci_testing.write_tar(
        tmp_path / "base.tar.gz", [oci_testing.file("etc/os-release", b"ID=debian\n")]
    )
    app = oci_testing.write_tar(tmp_path / "app.tar.gz", [oci_testing.file("app/x", b"1")])
    changed = oci_testing.write_tar(tmp_path / "app2.tar.gz", [oci_testing.file("app/x", b"2")])
    first = oci_testing.write_layout(tmp_path / "first", [shared, app])
    same = oci_testing.write_layout(tmp_path / "same", [shared, app])
    second = oci_testing.write_layout(tmp_path / "second", [shared, changed])
    code, out = diff(first, same, capsys)
    assert code == 0 and out.startswith("identical sha256:")
    code, out = diff(first, second, capsys)
    lines = out.splitlines()
    assert (
        code == 1
        and lines[0].startswith("manifest sha256:")
        and lines[1].startswith("layer 1: sha256:")
    )
    assert lines[2] == "member 0 differs: app/x" and "size=1" in lines[3]


def test_unreadable_or_mixed_inputs_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layer = oci_testing.write_tar(tmp_path / "a.tar.gz", [oci_testing.file("a")])
    assert layer_diff.main([str(layer), str(tmp_path)]) == 2
    assert "two layer files or two OCI layout directories" in capsys.readouterr().err
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8bnot gzip")
    assert layer_diff.main([str(layer), str(tmp_path / "junk.tar.gz")]) == 2
    assert capsys.readouterr().err.startswith("layer_diff: ")


def test_relative_paths_are_the_callers_under_bazel_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    oci_testing.write_tar(tmp_path / "a.tar.gz", [oci_testing.file("a")])
    monkeypatch.setenv("BUILD_WORKING_DIRECTORY", str(tmp_path))
    assert layer_diff.main(["a.tar.gz", "a.tar.gz"]) == 0
    assert capsys.readouterr().out.startswith("identical sha256:")
