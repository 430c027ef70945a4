"""deb_layer turns .debs into a distroless layer; ca_bundle builds the CA bundle from one.

The .debs here are written by the test (ar + control.tar.xz + data.tar.xz, as dpkg-deb
builds them), so every case names exactly what the input holds.
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from image.layers import ca_bundle, deb_layer

Data = dict[str, "bytes | str | None"]  # path -> file bytes, "->target" symlink, None directory


def tar_xz(members: Data, mtime: int = 1700000000) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:xz", format=tarfile.GNU_FORMAT) as archive:
        for name, value in members.items():
            info = tarfile.TarInfo("./" + name)
            info.mtime, info.uname, info.gname = mtime, "root", "root"
            if value is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            elif isinstance(value, str):
                info.type, info.linkname = tarfile.SYMTYPE, value.removeprefix("->")
                archive.addfile(info)
            else:
                # executable when it has a `#!` line, as Debian ships tarfile.py
                info.mode, info.size = (0o755 if value.startswith(b"#!") else 0o644), len(value)
                archive.addfile(info, io.BytesIO(value))
    return raw.getvalue()


def ar(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(deb_layer.AR_MAGIC)
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def control_text(package: str, version: str = "1.0-1") -> bytes:
    return f"Package: {package}\nVersion: {version}\nArchitecture: amd64\nDescription: test\n multi-line\n".encode()


def make_deb(
    tmp_path: Path,
    package: str,
    data: Data,
    data_name: str = "data.tar.xz",
    md5sums: bytes | None = b"abc  usr/x\n",
) -> Path:
    control: Data = {"control": control_text(package)}
    if md5sums is not None:
        control["md5sums"] = md5sums
    path = tmp_path / f"{package}.deb"
    path.write_bytes(
        ar(
            [
                ("debian-binary", b"2.0\n"),
                ("control.tar.xz", tar_xz(control)),
                (data_name, tar_xz(data)),
            ]
        )
    )
    return path


def layer(
    tmp_path: Path, debs: list[Path], rules: str = "", extra: list[str] | None = None
) -> dict[str, tarfile.TarInfo]:
    args = ["--output", str(tmp_path / "layer.tar.gz")]
    if rules:
        (tmp_path / "rules").write_text(rules)
        args += ["--exclude", str(tmp_path / "rules")]
    assert deb_layer.main(args + (extra or []) + [str(d) for d in debs]) == 0
    with tarfile.open(tmp_path / "layer.tar.gz", "r:gz") as archive:
        return {m.name: m for m in archive.getmembers()}


def read(tmp_path: Path, name: str) -> bytes:
    with tarfile.open(tmp_path / "layer.tar.gz", "r:gz") as archive:
        extracted = archive.extractfile(name)
        assert extracted is not None
        return extracted.read()


def test_merged_usr_moves_bin_sbin_and_lib_below_usr(tmp_path: Path) -> None:
    deb = make_deb(
        tmp_path,
        "libfoo",
        {
            "lib": None,
            "lib/x86_64-linux-gnu/libfoo.so.1": b"ELF",
            "sbin/tool": b"x",
            "bin": None,
            "bin/tool": b"y",
        },
    )
    base = make_deb(tmp_path, "base-files", {"bin": "->usr/bin", "lib": "->usr/lib"})
    members = layer(tmp_path, [base, deb])
    assert (
        "usr/lib/x86_64-linux-gnu/libfoo.so.1" in members
        and "usr/sbin/tool" in members
        and "usr/bin/tool" in members
    )
    assert members["bin"].issym() and members["bin"].linkname == "usr/bin"
    assert members["lib"].issym()


def test_one_status_record_per_package_with_its_control_file_and_md5sums(tmp_path: Path) -> None:
    debs = [
        make_deb(tmp_path, "alpha", {"usr/a": b"a"}),
        make_deb(tmp_path, "beta", {"usr/b": b"b"}, md5sums=None),
    ]
    members = layer(tmp_path, debs)
    assert read(tmp_path, "var/lib/dpkg/status.d/alpha") == control_text("alpha")
    assert read(tmp_path, "var/lib/dpkg/status.d/alpha.md5sums") == b"abc  usr/x\n"
    assert (
        "var/lib/dpkg/status.d/beta" in members
        and "var/lib/dpkg/status.d/beta.md5sums" not in members
    )
    assert members["var/lib/dpkg/status.d/alpha"].mode == 0o644


def test_excluded_files_go_and_their_directories_only_when_empty(tmp_path: Path) -> None:
    deb = make_deb(
        tmp_path,
        "pkg",
        {
            "usr/share/doc/pkg/changelog.gz": b"c",
            "usr/share/doc/pkg/copyright": b"(c)",
            "usr/share/man/man1/x.1": b"m",
        },
    )
    members = layer(
        tmp_path, [deb], rules="+usr/share/doc/*/copyright\n-usr/share/doc/**\n-usr/share/man/**\n"
    )
    assert "usr/share/doc/pkg/copyright" in members and "usr/share/doc/pkg" in members
    assert "usr/share/doc/pkg/changelog.gz" not in members
    assert not [name for name in members if name.startswith("usr/share/man")]


def test_deterministic_sorted_mtime_zero_no_owner_names(tmp_path: Path) -> None:
    deb = make_deb(tmp_path, "pkg", {"usr/z": b"z", "usr/a": b"a", "etc/conf": b"c"})
    first = layer(tmp_path, [deb])
    first_bytes = (tmp_path / "layer.tar.gz").read_bytes()
    layer(tmp_path, [deb])
    assert (tmp_path / "layer.tar.gz").read_bytes() == first_bytes
    assert list(first) == sorted(first)
    assert all(m.mtime == 0 and m.uname == "" and m.gname == "" for m in first.values())


def test_identical_duplicates_merge_and_different_ones_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = make_deb(tmp_path, "one", {"usr/share/common": b"same"})
    two = make_deb(tmp_path, "two", {"usr/share/common": b"same"})
    assert "usr/share/common" in layer(tmp_path, [one, two])
    three = make_deb(tmp_path, "three", {"usr/share/common": b"other"})
    assert deb_layer.main(["--output", str(tmp_path / "x.tar.gz"), str(one), str(three)]) == 1
    error = capsys.readouterr().err
    assert "/usr/share/common differs between one and three" in error


def test_a_zstd_data_tar_fails_naming_the_deb_and_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deb = make_deb(tmp_path, "zpkg", {"usr/a": b"a"}, data_name="data.tar.zst")
    assert deb_layer.main(["--output", str(tmp_path / "x.tar.gz"), str(deb)]) == 1
    error = capsys.readouterr().err
    assert (
        str(deb) in error
        and "data.tar.zst" in error
        and "Python 3.13's tarfile cannot read" in error
    )


def test_not_a_deb_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "bogus.deb"
    bogus.write_bytes(b"PK\x03\x04 a zip")
    assert deb_layer.main(["--output", str(tmp_path / "x.tar.gz"), str(bogus)]) == 1
    assert "not a .deb" in capsys.readouterr().err


def test_python_modules_get_bytecode_mode_0644_and_the_python3_link(tmp_path: Path) -> None:
    tag = sys.implementation.cache_tag
    deb = make_deb(
        tmp_path, "py", {"usr/lib/python3.99/mod.py": b"X = 1\n", "usr/bin/python3.99": b"ELF"}
    )
    deb2 = make_deb(tmp_path, "py2", {"usr/lib/python3.99/run.py": b"#!/usr/bin/python3\nY = 2\n"})
    members = layer(
        tmp_path,
        [deb, deb2],
        extra=[
            "--bytecode",
            f"{tag}:/usr/lib/python3.99",
            "--symlink",
            "/usr/bin/python3=python3.99",
        ],
    )
    assert f"usr/lib/python3.99/__pycache__/mod.{tag}.pyc" in members
    assert f"usr/lib/python3.99/__pycache__/run.{tag}.pyc" in members
    assert members["usr/lib/python3.99/run.py"].mode == 0o644
    assert (
        members["usr/bin/python3"].issym() and members["usr/bin/python3"].linkname == "python3.99"
    )


def test_bytecode_for_another_python_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deb = make_deb(tmp_path, "py", {"usr/lib/python3.99/mod.py": b"X = 1\n"})
    assert (
        deb_layer.main(
            [
                "--output",
                str(tmp_path / "x.tar.gz"),
                "--bytecode",
                "cpython-299:/usr/lib/python3.99",
                str(deb),
            ]
        )
        == 1
    )
    assert "cpython-299" in capsys.readouterr().err


def test_ca_bundle_concatenates_every_certificate_in_sorted_order(tmp_path: Path) -> None:
    deb = make_deb(
        tmp_path,
        "ca-certificates",
        {
            "usr/share/ca-certificates/mozilla/B.crt": b"-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----",
            "usr/share/ca-certificates/mozilla/A.crt": b"-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n",
            "usr/share/doc/ca-certificates/copyright": b"(c)",
        },
    )
    assert ca_bundle.bundle(deb) == (
        b"-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n"
        b"-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n"
    )


def test_ca_bundle_of_a_deb_without_certificates_fails(tmp_path: Path) -> None:
    deb = make_deb(tmp_path, "other", {"usr/a": b"a"})
    with pytest.raises(deb_layer.DebError, match="no usr/share/ca-certificates"):
        ca_bundle.bundle(deb)


# Any set of packages: the layer is sorted and deterministic, every kept member's parent
# directory is in it, every top-level /bin, /sbin, /lib* file went below /usr, and there is
# one status record per package.
_PATHS = st.sampled_from(
    [
        "bin/a",
        "sbin/b",
        "lib/x/c.so.1",
        "lib64/ld.so",
        "usr/share/doc/p/copyright",
        "usr/share/man/m.1",
        "etc/e",
        "usr/lib/f",
    ]
)


@settings(max_examples=40)
@given(
    packages=st.lists(
        st.dictionaries(_PATHS, st.just(b"same bytes"), min_size=1, max_size=5),
        min_size=1,
        max_size=3,
    )
)
def test_any_packages_make_a_sorted_merged_usr_layer(
    tmp_path_factory: pytest.TempPathFactory, packages: list[dict[str, bytes]]
) -> None:
    tmp_path = tmp_path_factory.mktemp("debs")
    debs = [make_deb(tmp_path, f"pkg{n}", dict(files)) for n, files in enumerate(packages)]
    members = layer(tmp_path, debs, rules="-usr/share/man/**\n")
    first = (tmp_path / "layer.tar.gz").read_bytes()
    layer(tmp_path, debs, rules="-usr/share/man/**\n")
    assert (tmp_path / "layer.tar.gz").read_bytes() == first
    names = list(members)
    assert names == sorted(names)
    for name in names:
        parent = name.rpartition("/")[0]
        assert not parent or members[parent].isdir(), name
        assert name.split("/")[0] not in deb_layer.MERGED_USR, name
        assert not name.startswith("usr/share/man")
    assert {
        n for n in names if n.startswith("var/lib/dpkg/status.d/") and not n.endswith(".md5sums")
    } == {f"var/lib/dpkg/status.d/pkg{n}" for n in range(len(packages))}
