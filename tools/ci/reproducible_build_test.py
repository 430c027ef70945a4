"""reproducible_build fails naming the differing member when a layer writer leaks the host's state.

The two Bazel builds are replaced by the real layer writer (image/layers/layer_builder.py)
run in two checkout directories at different paths, at different times and umasks: the
comparison and the report are the real ones, the Bazel invocation and the git checkouts are
exercised by the two-build runs (.ci/run, docs/building.md "Reproducible builds").
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from image.layers import layer_builder
from tools.ci import reproducible_build

MEMBER = "usr/share/cephaloproxy/build-info"

# One build's leak: given the checkout and the build's number, the planted member's entry.
Leak = Callable[[Path, int], layer_builder.Entry]


def honest(_checkout: Path, _number: int) -> layer_builder.Entry:
    return layer_builder.Entry("file", MEMBER, 0o644, 0, 0, data=b"version 1\n")


def leaks_the_checkout_path(checkout: Path, _number: int) -> layer_builder.Entry:
    return layer_builder.Entry("file", MEMBER, 0o644, 0, 0, data=f"built in {checkout}\n".encode())


def leaks_the_umask(checkout: Path, number: int) -> layer_builder.Entry:
    """Takes the mode of a file it just created, as a writer copying a scratch file would."""
    previous = os.umask(0o022 if number == 0 else 0o077)  # two build hosts' umasks
    try:
        scratch = checkout / "scratch"
        scratch.write_bytes(b"version 1\n")
    finally:
        os.umask(previous)
    return layer_builder.Entry(
        "file", MEMBER, scratch.stat().st_mode & 0o777, 0, 0, src=str(scratch)
    )


def leaks_the_time(_checkout: Path, _number: int) -> layer_builder.Entry:
    """Stamps the member with the time of the build, through the mtime of the tar header."""
    return layer_builder.Entry("file", MEMBER, 0o644, 0, 0, data=b"version 1\n")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """time.time() as the builds see it: the second build runs an hour after the first."""
    now = [1_700_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    yield now


def stamping_tar_info(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planted time leak: the writer gives MEMBER the build's time instead of the spec's mtime."""
    real_tar_info = layer_builder.tar_info

    def leaky(entry: layer_builder.Entry, mtime: int) -> tarfile.TarInfo:
        info = real_tar_info(entry, mtime)
        if entry.path == MEMBER:
            info.mtime = int(time.time())
        return info

    monkeypatch.setattr(layer_builder, "tar_info", leaky)


def fake_build(leak: Leak, clock: list[float] | None = None) -> reproducible_build.Build:
    """A Build that writes, in the checkout, what a layer target and an SBOM target would output."""
    numbers: list[int] = []

    def build(checkout: Path, targets: list[str]) -> dict[str, Path]:
        number = len(numbers)
        numbers.append(number)
        if clock is not None:
            clock[0] += 3600 * number
        source = checkout / "entrypoint.py"
        source.write_text("print('proxy')\n")
        out = checkout / "bazel-out/k8-fastbuild/bin/image/offline"
        out.mkdir(parents=True)
        entries = [
            layer_builder.Entry("dir", "var/log/squid", 0o770, 1000, 0),
            layer_builder.Entry(
                "file", "usr/local/bin/entrypoint.py", 0o755, 0, 0, src=str(source)
            ),
            leak(checkout, number),
        ]
        layer_builder.write_layer(
            sorted(entries, key=lambda entry: entry.path), 0, out / "app.tar.gz"
        )
        (out / "sbom.spdx.json").write_text(
            json.dumps({"spdxVersion": "SPDX-2.3", "name": "cephaloproxy"})
        )
        return {str(path.relative_to(checkout)): path for path in sorted(out.iterdir())}

    return build


def two_checkouts(tmp_path: Path) -> tuple[Path, Path]:
    checkouts = (tmp_path / "first", tmp_path / "second-checkout")
    for checkout in checkouts:
        checkout.mkdir()
    return checkouts


def test_two_honest_builds_are_reproducible(tmp_path: Path) -> None:
    code, lines = reproducible_build.check(
        two_checkouts(tmp_path), ["//image/offline:x"], fake_build(honest)
    )
    assert code == 0, lines
    assert lines[0] == "reproducible: 2 outputs identical in both builds"
    assert lines[1].startswith("  sha256:") and lines[1].endswith(
        "bazel-out/k8-fastbuild/bin/image/offline/app.tar.gz"
    )


@pytest.mark.parametrize(
    ("leak", "field"),
    [
        (leaks_the_checkout_path, "sha256="),
        (leaks_the_umask, "mode="),
        (leaks_the_time, "mtime="),
    ],
    ids=["checkout path", "umask", "time"],
)
def test_a_planted_leak_fails_naming_the_member(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: list[float],
    leak: Leak,
    field: str,
) -> None:
    if leak is leaks_the_time:
        stamping_tar_info(monkeypatch)
    code, lines = reproducible_build.check(
        two_checkouts(tmp_path), ["//image/offline:x"], fake_build(leak, clock)
    )
    assert code == 1
    assert lines[0] == "NOT reproducible: 1 of 2 outputs differ"
    assert lines[1].startswith("  bazel-out/k8-fastbuild/bin/image/offline/app.tar.gz: sha256:")
    assert lines[2] == "first difference, in bazel-out/k8-fastbuild/bin/image/offline/app.tar.gz:"
    assert lines[3].endswith(f"differs: {MEMBER}")
    first, second = lines[4], lines[5]
    assert first.strip().startswith("first :") and second.strip().startswith("second:")
    for side in (first, second):  # diffoci-style: path above, then size, mode, owner, content hash
        assert "size=" in side and "mode=" in side and "uid:gid=0:0" in side and "sha256=" in side
    value = [part for part in first.split() if part.startswith(field)]
    assert value and value[0] not in second.split(), (first, second)


def test_a_json_output_names_the_differing_value(tmp_path: Path, clock: list[float]) -> None:
    def build(checkout: Path, targets: list[str]) -> dict[str, Path]:
        document = checkout / "sbom.spdx.json"
        document.write_text(
            json.dumps({"creationInfo": {"created": time.time(), "creators": ["Tool: x"]}})
        )
        clock[0] += 1
        return {"bazel-out/bin/sbom.spdx.json": document}

    code, lines = reproducible_build.check(two_checkouts(tmp_path), ["//x"], build)
    assert code == 1
    assert lines[3:] == [
        "  JSON value differs at $.creationInfo.created",
        "    first : 1700000000.0",
        "    second: 1700000001.0",
    ]


def test_an_output_only_one_build_has_fails(tmp_path: Path) -> None:
    outputs = iter([["a", "b"], ["a"]])

    def build(checkout: Path, targets: list[str]) -> dict[str, Path]:
        names = next(outputs)
        for name in names:
            (checkout / name).write_text("same")
        return {name: checkout / name for name in names}

    code, lines = reproducible_build.check(two_checkouts(tmp_path), ["//x"], build)
    assert code == 1 and lines[1].startswith("  b: sha256:") and lines[1].endswith(" vs (absent)")
    assert lines[-1] == "  only the first build has it"


def test_outputs_come_from_the_build_event_file_nested_sets_included(tmp_path: Path) -> None:
    events = [
        {
            "id": {"namedSet": {"id": "1"}},
            "namedSetOfFiles": {
                "files": [
                    {
                        "name": "image/sbom/x.spdx.json",
                        "uri": f"file://{tmp_path}/out/x%20y.json",
                        "pathPrefix": ["bazel-out", "k8-fastbuild", "bin"],
                    }
                ]
            },
        },
        {
            "id": {"namedSet": {"id": "0"}},
            "namedSetOfFiles": {
                "files": [
                    {"name": "entrypoint/main.py", "uri": f"file://{tmp_path}/entrypoint/main.py"}
                ],
                "fileSets": [{"id": "1"}],
            },
        },
        {
            "id": {"targetCompleted": {"label": "//image/offline:reproducible_layers"}},
            "completed": {
                "success": True,
                "outputGroup": [{"name": "default", "fileSets": [{"id": "0"}]}],
            },
        },
    ]
    path = tmp_path / "events.json"
    path.write_text("\n".join(json.dumps(event) for event in events) + "\n")
    assert reproducible_build.outputs_from_events(reproducible_build.read_events(path)) == {
        "bazel-out/k8-fastbuild/bin/image/sbom/x.spdx.json": tmp_path / "out/x y.json",
        "entrypoint/main.py": tmp_path / "entrypoint/main.py",
    }
    failed = [{"id": {"targetCompleted": {"label": "//a:b"}}, "completed": {"success": False}}]
    with pytest.raises(reproducible_build.CheckError, match="//a:b did not build"):
        reproducible_build.outputs_from_events(failed)


def test_the_targets_file_one_label_a_line(tmp_path: Path) -> None:
    targets = tmp_path / "targets.txt"
    targets.write_text(
        "# comment\n\n//image/offline:reproducible_layers  # the image's layers\n//squid:layer\n"
    )
    assert reproducible_build.read_targets(targets) == [
        "//image/offline:reproducible_layers",
        "//squid:layer",
    ]
    targets.write_text("# nothing\n")
    with pytest.raises(reproducible_build.CheckError, match="names no target"):
        reproducible_build.read_targets(targets)


def test_the_default_targets_are_the_offline_image_layers() -> None:
    """The one list .ci/run checks: the image package's filegroup, on the branch that has it."""
    default = Path(__file__).resolve().parent / "reproducible_targets.txt"
    assert reproducible_build.read_targets(default) == ["//image/offline:reproducible_layers"]


def test_no_targets_file_exits_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert reproducible_build.main([]) == 2
    assert (
        f"cannot read the targets file {tmp_path}/tools/ci/reproducible_targets.txt"
        in capsys.readouterr().err
    )


def test_only_a_bazel_output_base_is_removed(tmp_path: Path) -> None:
    for name, removed in [("0123456789abcdef0123456789abcdef", True), ("home", False)]:
        bazel_out = tmp_path / name / "execroot/_main/bazel-out"
        bazel_out.mkdir(parents=True)
        checkout = tmp_path / f"checkout-{name}"
        checkout.mkdir()
        (checkout / "bazel-out").symlink_to(bazel_out)
        reproducible_build.remove_output_base(checkout)
        assert (tmp_path / name).exists() != removed


def test_one_revision_or_the_worktree_changes_not_both(capsys: pytest.CaptureFixture[str]) -> None:
    assert reproducible_build.parse_arguments([]).revision == "HEAD"
    with pytest.raises(SystemExit) as exit_info:
        reproducible_build.parse_arguments(["--revision", "main", "--worktree-changes"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
