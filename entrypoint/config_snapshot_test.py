"""Reading the config tree (Squid's line rules, include limits) and the snapshot Squid reads instead."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrypoint import config_snapshot, squid_config
from entrypoint.config_snapshot import SnapshotNames
from entrypoint.config_steps import in_worker
from entrypoint.squid_config import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_FILES,
    READ_TIME_LIMIT,
    ActiveConfig,
    ConfigError,
    parse_directives,
    read_tree,
)


def snapshot_of(main: Path, run_dir: Path) -> tuple[ActiveConfig, config_snapshot.Snapshot]:
    directives, files = read_tree(main)
    config = ActiveConfig(run_dir / "squid.conf", main, True, directives, files)
    return config, config_snapshot.write(config)


# -- Squid's preprocessor (cache_cf.cc parseOneConfigFile) ----------------------------------
def test_lines_are_joined_and_split_as_squid_does() -> None:
    text = (
        "acl a src 10.0.0.1\r trailing after CR is not read\n"  # 1
        "http_port 31\\\n"  # 2: joined directly, no space added
        "# a comment inside a continuation is skipped\n"  # 3
        "\n"  # 4: so is an empty line
        "  28 name=x\n"  # 5
        "acl b src\x0b10.0.0.2\n"  # 6: a vertical tab is no separator for Squid
        "acl c src 10.0.0.3\x85still line 7\u2028and still\n"  # 7: only LF ends a line
        "visible_hostname x\x00ignored after NUL\n"  # 8
        "dangling \\\n"  # 9: a continuation open at the end is dropped
    )
    assert [(d.line_number, d.name, d.args) for d in parse_directives(text)] == [
        (1, "acl", ("a", "src", "10.0.0.1")),
        (2, "http_port", ("3128", "name=x")),
        (6, "acl", ("b", "src\x0b10.0.0.2")),
        (7, "acl", ("c", "src", "10.0.0.3\x85still", "line", "7\u2028and", "still")),
        (8, "visible_hostname", ("x",)),
    ]


@given(
    st.text(alphabet=st.sampled_from("ab #\\\t\r\n\x00\x0b\x85\u2028=:"), max_size=200)
    | st.text(max_size=200)
)
def test_any_text_parses_into_directives_on_real_lines(text: str) -> None:
    directives = parse_directives(text)
    lines = text.split("\n")
    numbers = [d.line_number for d in directives]
    assert numbers == sorted(set(numbers))
    for directive in directives:
        assert 1 <= directive.line_number <= len(lines)
        assert directive.name and not set(directive.name + "".join(directive.args)) & set(
            " \t\n\r\x00"
        )
        assert not lines[directive.line_number - 1].lstrip(" \t").startswith("#")


@given(
    st.lists(
        st.sampled_from(
            ["a", " ", "\n", "\\", "#", "include ", "/nonexistent/*", "\udc80", "\ud800", "\x00"]
        ),
        max_size=30,
    ).map("".join)
)
def test_any_text_loads_or_fails_with_a_config_error(text: str) -> None:
    try:
        directives = squid_config.load_directives(Path("/nonexistent/squid.conf"), text)
    except ConfigError as error:
        assert "include" in str(error)
    else:
        assert all(d.name != "include" or not d.args for d in directives)


# -- include trees: only ConfigError, bounded; the snapshot parses to the same directives ------
FILE_NAMES = [f"f{n}.conf" for n in range(4)]


@st.composite
def include_trees(draw: st.DrawFn) -> dict[str, list[str]]:
    """Up to 4 files whose lines are directives, comments, junk and includes of later files
    (mostly: now and then a cycle, a missing file, a bare or relative include)."""
    count = draw(st.integers(1, len(FILE_NAMES)))
    files: dict[str, list[str]] = {}
    for index, name in enumerate(FILE_NAMES[:count]):
        later = FILE_NAMES[index + 1 : count]
        good = st.sampled_from(later) if later else st.just(None)
        lines = draw(
            st.lists(
                st.one_of(
                    st.sampled_from(
                        [
                            "http_port 3128",
                            "acl a src all",
                            "# include {dir}/f1.conf",
                            "",
                            "  \t",
                            "acl x src \\",
                        ]
                    ),
                    good.map(lambda n: f"include {{dir}}/{n}" if n else "acl none src all"),
                    good.map(
                        lambda n: (
                            f"  include {{dir}}/{n} \\\n# comment\n\n {{dir}}/{n}"
                            if n
                            else "acl none src all"
                        )
                    ),
                    good.map(
                        lambda n: (
                            f"include\t{{dir}}/{n}\r ignored after CR" if n else "acl none src all"
                        )
                    ),
                    st.just(
                        f"include {{dir}}/f[{index + 1}-9].conf" if later else "acl none src all"
                    ),
                    st.sampled_from(
                        [
                            "include {dir}/f*.conf",
                            "include",
                            "include relative.conf",
                            "include {dir}/missing.conf",
                        ]
                    )
                    if draw(st.booleans())
                    else st.just("acl c src all"),
                    st.text(alphabet=st.sampled_from("ai nclude\\\r\x00#"), max_size=12),
                ),
                max_size=6,
            )
        )
        files[name] = lines
    return files


@settings(max_examples=150)
@given(include_trees())
def test_any_include_tree_reads_or_fails_with_a_config_error_and_snapshots_faithfully(
    tree: dict[str, list[str]],
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        conf_dir, run_dir = base / "etc", base / "run"
        conf_dir.mkdir()
        run_dir.mkdir()
        for name, lines in tree.items():
            (conf_dir / name).write_text("\n".join(lines).replace("{dir}", str(conf_dir)) + "\n")
        started = time.monotonic()
        try:
            directives, files = read_tree(conf_dir / "f0.conf")
        except ConfigError as error:
            assert str(error)
            return
        finally:  # the contract's bound: a read past its time budget stops with a ConfigError
            assert time.monotonic() - started < READ_TIME_LIMIT + 5
        assert len(files) <= MAX_CONFIG_FILES
        config = ActiveConfig(run_dir / "squid.conf", conf_dir / "f0.conf", True, directives, files)
        snapshot = config_snapshot.write(config)
        again, copies = read_tree(snapshot.candidate)
        names = SnapshotNames()
        names.remember(snapshot)
        # The same directives at the same line numbers, each from a copy of its own file.
        assert [(d.line_number, d.name, d.args) for d in again] == [
            (d.line_number, d.name, d.args) for d in directives
        ]
        assert [names.restore(str(d.source)) for d in again] == [str(d.source) for d in directives]
        for original, copy in zip(files, copies, strict=True):
            assert copy.data.count(b"\n") == original.data.count(b"\n")
            if not original.includes:
                assert copy.data == original.data
        config_snapshot.activate(snapshot)
        assert (run_dir / "squid.conf").read_bytes() == copies[0].data


def test_a_huge_include_fan_out_is_refused_quickly_naming_the_limit_and_the_line(
    tmp_path: Path,
) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    for n in range(MAX_CONFIG_FILES + 500):
        (conf_d / f"{n:05d}.conf").write_text("acl a src all\n")
    main = tmp_path / "squid.conf"
    main.write_text(f"http_port 3128\ninclude {conf_d}/*.conf\n")
    started = time.monotonic()
    with pytest.raises(ConfigError) as failure:
        read_tree(main)
    elapsed = time.monotonic() - started
    assert re.search(
        rf"{main} line 2: include {conf_d}/\*\.conf: the config and its includes come to more than 900 files",
        str(failure.value),
    )
    print(f"refused {MAX_CONFIG_FILES + 500} files in {elapsed:.3f} s")


def test_a_nested_fan_out_is_refused_before_it_multiplies(tmp_path: Path) -> None:
    # Ten files that each include all ten, 16 levels deep: 10^16 inclusions if followed.
    for n in range(10):
        (tmp_path / f"{n}.conf").write_text(f"include {tmp_path}/[0-9].conf\n")
    main = tmp_path / "squid.conf"
    main.write_text(f"include {tmp_path}/0.conf\n")
    with pytest.raises(ConfigError, match=r"(more than 900 files|include cycle)"):
        read_tree(main)
    chain = tmp_path / "chain"
    chain.mkdir()
    for level in range(6):  # distinct files, no cycle: 4 + 4^2 + ... + 4^5 > 900 inclusions
        names = " ".join(f"{chain}/{level + 1}-{n}.conf" for n in range(4))
        for n in range(4):
            (chain / f"{level}-{n}.conf").write_text(
                f"include {names}\n" if level < 5 else "acl a src all\n"
            )
    with pytest.raises(ConfigError, match="more than 900 files"):
        read_tree(chain / "0-0.conf")


def test_the_whole_tree_is_limited_in_bytes(tmp_path: Path) -> None:
    half = MAX_CONFIG_BYTES // 2 + 1
    for name in ("a.conf", "b.conf"):
        (tmp_path / name).write_bytes(
            (b"#" * 99 + b"\n") * (half // 100 + 1)
        )  # lines Squid reads whole
    main = tmp_path / "squid.conf"
    main.write_text(f"include {tmp_path}/a.conf {tmp_path}/b.conf\n")
    with pytest.raises(
        ConfigError,
        match=rf"b.conf: the config and its includes come to more than {MAX_CONFIG_BYTES} bytes",
    ):
        read_tree(main)


def test_a_read_is_abandoned_when_cancelled(tmp_path: Path) -> None:
    main = tmp_path / "squid.conf"
    main.write_text("acl a src all\n")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ConfigError, match="abandoned"):
        read_tree(main, cancel=cancel)


def test_undecodable_bytes_are_read_and_copied_as_they_are(tmp_path: Path) -> None:
    main = tmp_path / "squid.conf"
    main.write_bytes(b"acl a src \xff\xfe\nvisible_hostname \xc3\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config, snapshot = snapshot_of(main, run_dir)
    assert [d.line_number for d in config.directives] == [1, 2]
    assert snapshot.candidate.read_bytes() == main.read_bytes()


# -- the snapshot ---------------------------------------------------------------------------
def test_include_lines_point_at_copies_on_the_same_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_d = tmp_path / "etc" / "conf.d"
    conf_d.mkdir(parents=True)
    (conf_d / "b.conf").write_text("acl b src all\n")
    (conf_d / "a.conf").write_text(f"\ninclude {conf_d}/b.conf\nacl a src all\n")
    (tmp_path / "etc" / "rel.conf").write_text("acl rel src all\n")
    main = tmp_path / "etc" / "squid.conf"
    main.write_text(
        f"http_port 3128\ninclude {conf_d}/*.conf \\\n  etc/rel.conf\nacl last src all\n"
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.chdir(tmp_path)  # relative includes are relative to the working directory
    _config, snapshot = snapshot_of(main, run_dir)
    copy = snapshot.candidate.read_text().split("\n")
    assert copy[0] == "http_port 3128" and copy[2] == "" and copy[3] == "acl last src all"
    assert copy[1] == f"include {run_dir}/config-1/0/*.conf"
    listing = sorted(str(p.relative_to(run_dir)) for p in (run_dir / "config-1").rglob("*.conf"))
    assert listing == [
        "config-1/0/00000.conf",
        "config-1/0/00001.conf",
        "config-1/0/00002.conf",
        "config-1/1/00000.conf",
    ]
    # Sorted glob matches first (a.conf, b.conf), then the next word's file, as Squid reads them.
    assert (
        run_dir / "config-1/0/00000.conf"
    ).read_text() == f"\ninclude {run_dir}/config-1/1/*.conf\nacl a src all\n"
    assert (run_dir / "config-1/0/00002.conf").read_text() == "acl rel src all\n"
    assert [d.name + " " + d.args[0] for d in read_tree(snapshot.candidate)[0]] == [
        "http_port 3128",
        "acl b",
        "acl a",
        "acl b",
        "acl rel",
        "acl last",
    ]
    for path in [snapshot.candidate, *(run_dir / "config-1").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o750 if path.is_dir() else 0o640), path


def one_include(tmp_path: Path, run_name: str = "run") -> tuple[Path, Path]:
    """A config including one file, and an empty run dir: (config, run dir)."""
    (tmp_path / "inc.conf").write_text("acl a src all\n")
    main = tmp_path / "squid.conf"
    main.write_text(f"include {tmp_path}/inc.conf\n")
    run_dir = tmp_path / run_name
    run_dir.mkdir()
    return main, run_dir


def test_activation_renames_and_keeps_three_generations(tmp_path: Path) -> None:
    main, run_dir = one_include(tmp_path)
    (run_dir / ".squid.conf.7").write_text("left over by a crash\n")
    (run_dir / "squid.pid").write_text("1\n")
    inodes = []
    for generation in (8, 9, 10, 11):
        _, snapshot = snapshot_of(main, run_dir)
        assert snapshot.generation == generation
        inodes.append(snapshot.candidate.stat().st_ino)
        config_snapshot.activate(snapshot)
        assert (run_dir / "squid.conf").stat().st_ino == inodes[-1]  # renamed, never rewritten
    assert sorted(os.listdir(run_dir)) == [
        "config-10",
        "config-11",
        "config-9",
        "squid.conf",
        "squid.pid",
    ]
    _, refused = snapshot_of(main, run_dir)
    config_snapshot.discard(refused)
    assert sorted(os.listdir(run_dir)) == [
        "config-10",
        "config-11",
        "config-9",
        "squid.conf",
        "squid.pid",
    ]


def test_a_run_dir_squids_include_cannot_name_is_refused_only_with_includes(tmp_path: Path) -> None:
    main, run_dir = one_include(tmp_path, "run dir")
    with pytest.raises(
        ConfigError, match=r"run dir .*run dir contains a space.*CEPHALOPROXY_RUN_DIR"
    ):
        snapshot_of(main, run_dir)
    assert os.listdir(run_dir) == []
    main.write_text("acl a src all\n")
    _, snapshot = snapshot_of(main, run_dir)
    assert snapshot.candidate.read_text() == "acl a src all\n"


def test_squids_messages_name_the_operators_files(tmp_path: Path) -> None:
    main, run_dir = one_include(tmp_path)
    names = SnapshotNames()
    assert names.restore(f"{run_dir}/squid.conf line 1") == f"{run_dir}/squid.conf line 1"
    _, snapshot = snapshot_of(main, run_dir)
    names.remember(snapshot)
    assert (
        names.restore(f"FATAL: Bungled {run_dir}/config-1/0/00000.conf line 1: acl")
        == f"FATAL: Bungled {tmp_path}/inc.conf line 1: acl"
    )
    assert (
        names.restore(f"Processing Configuration File: {run_dir}/.squid.conf.1 (depth 0)")
        == f"Processing Configuration File: {main} (depth 0)"
    )
    assert names.restore(f"{run_dir}/squid.conf.") == f"{main}."
    for other in (
        f"{run_dir}/squid.conf.default",
        f"{run_dir}/squid.pid",
        f"{run_dir}/config-9/0/00000.conf",
    ):
        assert names.restore(other) == other


@given(
    st.lists(
        st.sampled_from(
            [
                "/run/",
                "config-1/0/00000.conf",
                "squid.conf",
                ".squid.conf.1",
                ".",
                "x",
                " ",
                "\n",
                "/etc/inc.conf",
            ]
        ),
        max_size=12,
    ).map("".join)
)
def test_mapping_back_changes_only_known_snapshot_paths(text: str) -> None:
    names = SnapshotNames()
    names.remember(
        config_snapshot.Snapshot(
            1,
            Path("/run/.squid.conf.1"),
            Path("/run/squid.conf"),
            {
                "/run/.squid.conf.1": "/etc/squid.conf",
                "/run/squid.conf": "/etc/squid.conf",
                "/run/config-1/0/00000.conf": "/etc/inc.conf",
            },
        )
    )
    restored = names.restore(text)
    if "/run/" not in text:
        assert restored == text
    # What is left of the run dir's paths is none of the snapshot's (each is followed by more name).
    for match in re.finditer(
        r"/run/(config-1/0/00000\.conf|\.squid\.conf\.1|squid\.conf)", restored
    ):
        assert re.match(r"[\w-]|\.\w", restored[match.end() : match.end() + 2]), restored


# -- the worker thread ------------------------------------------------------------------------
def test_in_worker_keeps_the_loop_running_and_gives_up_on_cancel_or_timeout() -> None:
    async def scenario() -> None:
        loop_ticks = 0

        async def ticker() -> None:
            nonlocal loop_ticks
            while True:
                loop_ticks += 1
                await asyncio.sleep(0.01)

        tick = asyncio.ensure_future(ticker())
        threads: list[str] = []

        def slow(cancel: threading.Event) -> str:
            threads.append(threading.current_thread().name)
            cancel.wait(1.0)
            return "done" if not cancel.is_set() else "cancelled"

        assert await in_worker(slow, "slow") == "done"
        assert loop_ticks >= 20 and threads == ["cephaloproxy-config"]
        with pytest.raises(ConfigError, match=r"^a hung read took longer than 0.2 s"):
            await in_worker(lambda cancel: time.sleep(5), "a hung read", timeout=0.2)
        seen: list[threading.Event] = []

        def stoppable(cancel: threading.Event) -> None:
            seen.append(cancel)
            cancel.wait(30)

        job = asyncio.ensure_future(in_worker(stoppable, "stoppable"))
        await asyncio.sleep(0.2)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert seen[0].is_set()
        with pytest.raises(KeyError):
            await in_worker(lambda cancel: dict[str, int]()["x"], "failing")
        tick.cancel()

    asyncio.run(scenario())
