"""The allowlist and the layer filters on synthetic layers shaped like the image's.

The raw inputs carry what the real ones do (from the trixie .debs of
image/trixie.lock.json and python-build-standalone's layout): the filters of
debian_packages.exclude and python_runtime.exclude must drop each unwanted
file, and the allowlist check must fail on each one if it comes back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from image.layers import allowlist, layer_builder, path_rules
from image.layers.oci_layout import Image, load_image
from image.layers.oci_testing import (
    Member,
    directory,
    file,
    script,
    symlink,
    write_layout,
    write_tar,
)

LAYERS_DIR = Path(__file__).parent
ELF = b"\x7fELF" + b"\0" * 60
INTERPRETER = ELF + b"python 3.13 interpreter"

# The trixie .debs' files that must not reach the image.
DEBIAN_UNWANTED = [
    script("usr/sbin/update-ca-certificates", "#!/bin/sh -e"),
    file("usr/share/man/man8/update-ca-certificates.8.gz", b"\x1f\x8b"),
    file(
        "usr/share/gdb/auto-load/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.33-gdb.py",
        b"import gdb\n",
    ),
    file("usr/share/gcc/python/libstdcxx/v6/printers.py", b"# pretty-printers\n"),
    file("usr/share/lintian/overrides/libc6", b"libc6: x\n"),
    file("usr/share/doc/libc6/changelog.Debian.gz", b"\x1f\x8b"),
    script(
        "usr/share/doc/ca-certificates/examples/ca-certificates-local/debian/rules",
        "#!/usr/bin/make -f",
    ),
    symlink("usr/share/doc/libgcc-s1", "gcc-14-base"),
    script("etc/update-motd.d/10-uname", "#!/bin/sh"),
    file("usr/share/base-files/dot.bashrc", b"# ~/.bashrc\n"),
    directory("etc/ca-certificates/update.d"),
    symlink("usr/share/zoneinfo/localtime", "/etc/localtime"),
    file("usr/lib/x86_64-linux-gnu/libmemusage.so", ELF),
]
DEBIAN_WANTED = [
    symlink("bin", "usr/bin"),
    symlink("lib", "usr/lib"),
    symlink("lib64", "usr/lib64"),
    symlink("sbin", "usr/sbin"),
    directory("usr/bin"),
    directory("usr/sbin"),
    directory("tmp", 0o1777),
    file("usr/lib/os-release", b'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\n'),
    symlink("etc/os-release", "../usr/lib/os-release"),
    file("etc/services", b"http 80/tcp\n"),
    Member("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "file", 0o755, ELF),
    symlink("usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
    Member("usr/lib/x86_64-linux-gnu/libc.so.6", "file", 0o755, ELF),
    file("usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.33", ELF),
    symlink("usr/lib/x86_64-linux-gnu/libstdc++.so.6", "libstdc++.so.6.0.33"),
    directory("usr/share/zoneinfo"),
    directory("usr/share/zoneinfo/Europe"),
    file("usr/share/zoneinfo/UTC", b"TZif"),
    file("usr/share/zoneinfo/Europe/Paris", b"TZif"),
    file("usr/share/doc/libc6/copyright", b"GPL\n"),
    file("usr/share/common-licenses/GPL-3", b"GPL\n"),
    symlink("usr/share/common-licenses/GPL", "GPL-3"),
    file("var/lib/dpkg/status.d/libc6", b"Package: libc6\n"),
]

# python-build-standalone's tree, relative to its root; the rule installs it at /usr.
PYTHON_UNWANTED = [
    script("bin/idle3.13", "#!/usr/bin/env python3.13"),
    script("bin/pydoc3.13", "#!/usr/bin/env python3.13"),
    script("bin/python3.13-config", "#!/bin/sh"),
    script("bin/pip3", "#!/usr/bin/env python3"),
    file("include/python3.13/patchlevel.h", b'#define PY_VERSION "3.13.9"\n'),
    file("share/man/man1/python3.13.1", b".TH\n"),
    script("lib/python3.13/config-3.13-x86_64-linux-gnu/makesetup", "#! /bin/sh"),
    file("lib/python3.13/tkinter/__init__.py", b"import _tkinter\n"),
    file("lib/python3.13/idlelib/idle.py", b"#! /usr/bin/env python3\n"),
    file("lib/python3.13/ensurepip/__init__.py", b""),
    file("lib/python3.13/site-packages/pip/__init__.py", b""),
    # The archive's own bytecode (dropped); an optimised .pyc is nothing the layer builder makes.
    file("lib/python3.13/__pycache__/os.cpython-313.opt-1.pyc", b"\0"),
    file("lib/tcl8.6/init.tcl", b"# tcl\n"),
]
PYTHON_WANTED = [
    Member(
        "bin/python3", "file", 0o755, INTERPRETER
    ),  # a copy: Bazel follows the archive's symlink
    Member("bin/python3.13", "file", 0o755, INTERPRETER),
    file("lib/libpython3.13.so.1.0", ELF + b"3.13.9\0"),
    file("lib/python3.13/os.py", b"import abc\n"),
    # Stdlib modules with a `#!` line, some executable in the archive.
    Member("lib/python3.13/base64.py", "file", 0o755, b"#! /usr/bin/env python3\n"),
    file("lib/python3.13/lib-dynload/_ssl.cpython-313-x86_64-linux-gnu.so", ELF),
]

APP = [
    file("usr/local/bin/entrypoint.py", b"#!/usr/bin/python3\n"),
    file("usr/lib/cephaloproxy/entrypoint/__init__.py", b""),
    Member("usr/sbin/squid", "file", 0o755, ELF),
    file("usr/share/doc/cephaloproxy/cephaloproxy.spdx.json", b"{}"),
    directory("var/log/squid", 0o770),
    directory("etc/squid/conf.d"),
]


def python_layer(tmp_path: Path, members: list[Member], name: str = "python.tar.gz") -> Path:
    """The python_runtime_layer rule's spec, with the real exclusion file."""
    sources = tmp_path / "runtime"
    entries = []
    for member in members:
        source = sources / member.path
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(member.data)
        source.chmod(member.mode)
        mode = "0644" if member.path.startswith("lib/") and member.path.endswith(".py") else "auto"
        entries.append(
            {"type": "file", "path": "usr/" + member.path, "src": str(source), "mode": mode}
        )
    spec = tmp_path / (name + ".json")
    spec.write_text(
        json.dumps(
            {
                "mtime": 0,
                "exclude_rules": str(LAYERS_DIR / "python_runtime.exclude"),
                "exclude_prefix": "usr",
                "link_duplicates": True,
                "entries": entries,
            }
        )
    )
    output = tmp_path / name
    assert layer_builder.main([str(spec), str(output)]) == 0
    return output


def debian_layer(tmp_path: Path, members: list[Member]) -> Path:
    """//image:debian_packages: the flattened .debs through debian_packages.exclude."""
    raw = write_tar(tmp_path / "debs.tar.gz", members)
    output = tmp_path / "debian.tar.gz"
    assert (
        layer_builder.main(
            ["--filter", str(LAYERS_DIR / "debian_packages.exclude"), str(raw), str(output)]
        )
        == 0
    )
    return output


def image_of(tmp_path: Path, layers: list[Path]) -> Image:
    layout = write_layout(tmp_path / "layout", layers)
    return load_image(layout, inspect_file=allowlist.first_line, inspect_prefix_bytes=b"#!")


@pytest.fixture()
def built_layers(tmp_path: Path) -> list[Path]:
    """The four kinds of layer, built from inputs that include every unwanted file."""
    return [
        debian_layer(tmp_path, DEBIAN_WANTED + DEBIAN_UNWANTED),
        python_layer(tmp_path, PYTHON_WANTED + PYTHON_UNWANTED),
        write_tar(tmp_path / "app.tar.gz", APP),
    ]


@pytest.fixture(scope="module")
def rules() -> list[path_rules.Rule]:
    return allowlist.load()


def test_filtered_layers_pass_the_allowlist(
    tmp_path: Path, built_layers: list[Path], rules: list[path_rules.Rule]
) -> None:
    image = image_of(tmp_path, built_layers)
    assert allowlist.check(image, rules) == []
    # What stays: one interpreter file, python3 linking to it, the licence text.
    assert image.entries["/usr/bin/python3"].kind == "symlink"
    assert image.entries["/usr/bin/python3"].linkname == "python3.13"
    assert image.entries["/usr/bin/python3.13"].kind == "file"
    assert "/usr/share/doc/libc6/copyright" in image.entries
    assert image.entries["/usr/lib/python3.13/base64.py"].mode == 0o644


def test_unfiltered_inputs_fail_on_every_unwanted_file(
    tmp_path: Path, rules: list[path_rules.Rule]
) -> None:
    raw_python = tmp_path / "raw_python.tar.gz"
    write_tar(
        raw_python,
        [
            Member("usr/" + m.path, m.kind, m.mode, m.data, m.target)
            for m in PYTHON_WANTED + PYTHON_UNWANTED
        ],
    )
    raw_debian = write_tar(tmp_path / "raw_debian.tar.gz", DEBIAN_WANTED + DEBIAN_UNWANTED)
    image = image_of(tmp_path, [raw_debian, raw_python, write_tar(tmp_path / "app.tar.gz", APP)])
    flagged = {line.split(" ", 1)[0] for line in allowlist.check(image, rules)}
    expected = (
        {"/" + m.path for m in DEBIAN_UNWANTED}
        | {"/usr/" + m.path for m in PYTHON_UNWANTED}
        | {"/usr/bin/python3"}
    )
    assert expected <= flagged, f"not flagged: {sorted(expected - flagged)}"


UNWANTED_IN_IMAGE = (
    [pytest.param(m, id=m.path) for m in DEBIAN_UNWANTED]
    + [
        pytest.param(Member("usr/" + m.path, m.kind, m.mode, m.data, m.target), id="usr/" + m.path)
        for m in PYTHON_UNWANTED
    ]
    + [
        pytest.param(
            Member("usr/bin/python3", "file", 0o755, INTERPRETER), id="second-full-python3"
        ),
        pytest.param(
            script("usr/bin/pydoc3", "#!/usr/bin/python3"), id="pydoc3-with-valid-shebang"
        ),
        pytest.param(
            file("usr/bin/python3.13-config", b"#!/bin/sh\n"), id="python-config-not-executable"
        ),
        # Bytecode only as add_bytecode writes it: this Python's tag, beside the stdlib or the package.
        pytest.param(
            file("usr/lib/python3.13/__pycache__/base64.pyc", b"\xf3\r\r\n"), id="pyc-without-tag"
        ),
        pytest.param(
            file("usr/lib/python3.13/__pycache__/base64.cpython-313.opt-1.pyc", b"\xf3\r\r\n"),
            id="pyc-optimized",
        ),
        pytest.param(
            file("usr/local/bin/__pycache__/healthcheck.cpython-313.pyc", b"\xf3\r\r\n"),
            id="pyc-outside-the-libs",
        ),
        pytest.param(directory("etc/__pycache__"), id="pycache-dir-outside-the-libs"),
    ]
)


@pytest.mark.parametrize("unwanted", UNWANTED_IN_IMAGE)
def test_each_unwanted_file_fails_if_it_comes_back(
    tmp_path: Path, built_layers: list[Path], rules: list[path_rules.Rule], unwanted: Member
) -> None:
    extra = write_tar(tmp_path / "extra.tar.gz", [unwanted])
    problems = allowlist.check(image_of(tmp_path, built_layers + [extra]), rules)
    assert any(line.startswith("/" + unwanted.path + " ") for line in problems), problems


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (
            script("usr/local/bin/tool.py", "#!/usr/bin/env python3"),
            "/usr/bin/env is not an executable file",
        ),
        (
            script("usr/lib/squid/helper", "#!/usr/bin/perl -w"),
            "/usr/bin/perl is not an executable file",
        ),
        (file("usr/lib/python3.13/webbrowser.py", b"#!/usr/bin/env perl\n"), "/usr/bin/env is not"),
        (script("usr/lib/squid/empty", "#!"), "empty #! line"),
    ],
)
def test_shebangs_must_name_an_interpreter_in_the_image(
    tmp_path: Path,
    built_layers: list[Path],
    rules: list[path_rules.Rule],
    member: Member,
    message: str,
) -> None:
    extra = write_tar(tmp_path / "extra.tar.gz", [member])
    problems = allowlist.check(image_of(tmp_path, built_layers + [extra]), rules)
    assert [p for p in problems if p.startswith("/" + member.path + " ")] and message in "\n".join(
        problems
    ), problems


def test_a_module_naming_python_through_env_is_fine(
    tmp_path: Path, built_layers: list[Path], rules: list[path_rules.Rule]
) -> None:
    extra = write_tar(
        tmp_path / "extra.tar.gz", [file("usr/lib/python3.13/pdb.py", b"#! /usr/bin/env python3\n")]
    )
    assert allowlist.check(image_of(tmp_path, built_layers + [extra]), rules) == []


def test_a_script_naming_the_interpreter_directly_is_fine(
    tmp_path: Path, built_layers: list[Path], rules: list[path_rules.Rule]
) -> None:
    extra = write_tar(
        tmp_path / "extra.tar.gz", [script("usr/local/bin/healthcheck.py", "#!/usr/bin/python3")]
    )
    assert allowlist.check(image_of(tmp_path, built_layers + [extra]), rules) == []


def test_dangling_symlink_and_empty_unlisted_directory_fail(
    tmp_path: Path, built_layers: list[Path], rules: list[path_rules.Rule]
) -> None:
    extra = write_tar(
        tmp_path / "extra.tar.gz",
        [
            symlink("usr/lib/x86_64-linux-gnu/libgone.so.1", "libgone.so.1.0"),
            directory("usr/share/gdb"),
        ],
    )
    problems = allowlist.check(image_of(tmp_path, built_layers + [extra]), rules)
    assert any(
        p.startswith("/usr/lib/x86_64-linux-gnu/libgone.so.1 is a symlink to libgone.so.1.0")
        for p in problems
    ), problems
    assert any(
        p.startswith("/usr/share/gdb is a directory with nothing allowed below it")
        for p in problems
    ), problems


def test_a_later_whiteout_removes_an_unwanted_file(
    tmp_path: Path, rules: list[path_rules.Rule]
) -> None:
    raw = write_tar(
        tmp_path / "raw.tar.gz",
        DEBIAN_WANTED + [script("usr/sbin/update-ca-certificates", "#!/bin/sh -e")],
    )
    whiteout = write_tar(tmp_path / "wh.tar.gz", [file("usr/sbin/.wh.update-ca-certificates")])
    layers = [
        raw,
        whiteout,
        python_layer(tmp_path, PYTHON_WANTED),
        write_tar(tmp_path / "app.tar.gz", APP),
    ]
    assert allowlist.check(image_of(tmp_path, layers), rules) == []


def test_bytecode_beside_its_source_is_allowed_with_its_directories(
    tmp_path: Path, built_layers: list[Path], rules: list[path_rules.Rule]
) -> None:
    # What add_bytecode writes: the __pycache__ directory entries too, not only the .pyc files.
    extra = write_tar(
        tmp_path / "extra.tar.gz",
        [
            directory("usr/lib/python3.13/__pycache__"),
            file("usr/lib/python3.13/__pycache__/base64.cpython-313.pyc", b"\xf3\r\r\n"),
            directory("usr/lib/python3.13/asyncio/__pycache__"),
            file("usr/lib/python3.13/asyncio/__pycache__/events.cpython-313.pyc", b"\xf3\r\r\n"),
            directory("usr/lib/cephaloproxy/entrypoint/__pycache__"),
            file("usr/lib/cephaloproxy/entrypoint/__pycache__/main.cpython-313.pyc", b"\xf3\r\r\n"),
        ],
    )
    assert allowlist.check(image_of(tmp_path, built_layers + [extra]), rules) == []


def test_the_arm64_loader_link_is_allowed(
    tmp_path: Path, built_layers: list[Path], rules: list[path_rules.Rule]
) -> None:
    # Debian arm64's PT_INTERP is /lib/ld-linux-aarch64.so.1: a link in usr/lib, not usr/lib64.
    extra = write_tar(
        tmp_path / "extra.tar.gz",
        [
            Member("usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1", "file", 0o755, ELF),
            symlink("usr/lib/ld-linux-aarch64.so.1", "aarch64-linux-gnu/ld-linux-aarch64.so.1"),
        ],
    )
    assert allowlist.check(image_of(tmp_path, built_layers + [extra]), rules) == []


@pytest.mark.parametrize("line", ["q usr/bin/x", "f", "f a b", "f a[b"])
def test_malformed_allowlist_lines_are_rejected(line: str) -> None:
    with pytest.raises(path_rules.RuleError):
        allowlist.parse([line])
