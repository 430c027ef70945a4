"""squid/layout_tool.py: the image layout as a directory and as a tar."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from squid import layout_tool


def fake_install(base: Path) -> tuple[Path, Path, Path]:
    """A small install tree shaped like Squid's DESTDIR install."""
    squid = base / "usr/sbin/squid"
    helpers = base / "usr/lib/squid"
    data = base / "usr/share/squid"
    for directory in (
        squid.parent,
        helpers,
        data / "errors/templates",
        data / "errors/en",
        data / "icons",
    ):
        directory.mkdir(parents=True, exist_ok=True)
    squid.write_bytes(b"\x7fELF squid")
    squid.chmod(0o750)
    for helper in ("security_file_certgen", "basic_ncsa_auth"):
        (helpers / helper).write_bytes(b"\x7fELF helper")
        (helpers / helper).chmod(0o4755)  # setuid must not survive
    (data / "errors/templates/ERR_ACCESS_DENIED").write_text("denied")
    (data / "errors/en-us").symlink_to("en")
    (data / "icons/silk.png").write_bytes(b"png")
    (data / "mime.conf").write_text("\\.html$ text/html\n")
    (data / "mime.conf").chmod(0o755)  # as Bazel marks outputs: must become 0644
    (data / "mib.txt").write_text("not shipped")
    return squid, helpers, data


def test_directory_layout(tmp_path: Path) -> None:
    squid, helpers, data = fake_install(tmp_path / "install")
    out = tmp_path / "rootfs"
    assert (
        layout_tool.main(
            [
                "--squid",
                str(squid),
                "--helpers",
                str(helpers),
                "--data",
                str(data),
                "--out-dir",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "usr/sbin/squid").stat().st_mode & 0o7777 == 0o755
    assert (out / "usr/lib/squid/basic_ncsa_auth").stat().st_mode & 0o7777 == 0o755
    assert (out / "usr/share/squid/mime.conf").stat().st_mode & 0o7777 == 0o644
    assert (out / "usr/share/squid/errors/en-us").is_symlink()
    assert not (out / "usr/share/squid/mib.txt").exists()


def test_tar_is_reproducible_and_root_owned(tmp_path: Path) -> None:
    squid, helpers, data = fake_install(tmp_path / "install")
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    for out in (first, second):
        args = [
            "--squid",
            str(squid),
            "--helpers",
            str(helpers),
            "--data",
            str(data),
            "--out-tar",
            str(out),
        ]
        assert layout_tool.main(args) == 0
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
    assert members["usr/sbin/squid"].mode == 0o755
    assert members["usr/lib/squid/security_file_certgen"].mode == 0o755
    assert members["usr/share/squid/errors/en-us"].linkname == "en"
    assert all(
        m.uid == 0 and m.gid == 0 and m.mtime == layout_tool.FIXED_MTIME for m in members.values()
    )
    assert not any(name.startswith(("var", "etc")) for name in members)


def test_missing_helper_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    squid, helpers, data = fake_install(tmp_path / "install")
    (helpers / "security_file_certgen").unlink()
    out = tmp_path / "layer.tar"
    assert (
        layout_tool.main(
            [
                "--squid",
                str(squid),
                "--helpers",
                str(helpers),
                "--data",
                str(data),
                "--out-tar",
                str(out),
            ]
        )
        == 1
    )
    assert "security_file_certgen: required helper missing" in capsys.readouterr().err
    assert not out.exists() and not out.with_name("layer.tar.partial").exists()


def test_sandbox_staged_inputs_are_followed(tmp_path: Path) -> None:
    """Bazel stages inputs as absolute symlinks; they stand for their targets."""
    squid, helpers, data = fake_install(tmp_path / "install")
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "helpers").mkdir()
    for helper in helpers.iterdir():
        (staged / "helpers" / helper.name).symlink_to(helper.resolve())
    (staged / "helpers" / "helper-mux").write_text("#!/usr/bin/perl\n")
    (staged / "data").symlink_to(data.resolve())
    out = tmp_path / "rootfs"
    args = [
        "--squid",
        str(squid),
        "--helpers",
        str(staged / "helpers"),
        "--data",
        str(staged / "data"),
        "--out-dir",
        str(out),
    ]
    assert layout_tool.main(args) == 0
    certgen = out / "usr/lib/squid/security_file_certgen"
    assert certgen.is_file() and not certgen.is_symlink()
    assert (out / "usr/share/squid/errors/templates/ERR_ACCESS_DENIED").read_text() == "denied"
    assert not (out / "usr/lib/squid/helper-mux").exists()
