"""Absent versus broken mounts, and bounded non-blocking reads (real files, FIFOs, devices)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from entrypoint.mounted_files import FileAbsent, FileProblem, check_file, read_bounded


def test_absent_path_and_absent_parent_are_absent(tmp_path: Path) -> None:
    assert check_file(tmp_path / "squid.conf") is False
    assert check_file(tmp_path / "no-dir" / "squid.conf") is False
    with pytest.raises(FileAbsent):
        read_bounded(tmp_path / "squid.conf", 10)


def test_parent_that_is_a_dangling_symlink_is_broken_not_absent(tmp_path: Path) -> None:
    (tmp_path / "etc").symlink_to(tmp_path / "gone")
    with pytest.raises(FileProblem, match=r"etc is a dangling symlink"):
        check_file(tmp_path / "etc" / "squid.conf")


def test_parent_that_is_a_file_is_broken(tmp_path: Path) -> None:
    (tmp_path / "etc").write_text("")
    with pytest.raises(FileProblem, match="not a directory"):
        check_file(tmp_path / "etc" / "squid.conf")


def test_symlinked_regular_file_reads(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"abc")
    (tmp_path / "link").symlink_to("real")
    assert check_file(tmp_path / "link") is True
    assert read_bounded(tmp_path / "link", 3) == b"abc"
    with pytest.raises(FileProblem, match="is 3 bytes, more than the 2 bytes allowed"):
        read_bounded(tmp_path / "link", 2)


@pytest.mark.parametrize("kind", ["FIFO", "device"])
def test_fifo_and_device_are_refused_without_blocking(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "f"
    if kind == "FIFO":
        os.mkfifo(path)  # with no writer, a blocking open would never return
        expected = "is a FIFO"
    else:
        path.symlink_to("/dev/zero")  # endless: an unbounded read would never end
        expected = "is a character device"
    with pytest.raises(FileProblem, match=expected):
        read_bounded(path, 100)
