"""oci_writer writes layouts whose digests, diff_ids and layer order a runtime accepts.

Each check recomputes what the OCI image spec requires from the written bytes (blob names are
their sha256, the config's diff_ids are the sha256 of each uncompressed layer, the manifest
lists the layers bottom first) and reads the result back through oci_layout, the reader the
image checks use; the docker-archive must name the same config and layers.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from image.layers import oci_layout, oci_testing, oci_writer

CONFIG = {
    "entrypoint": ["/usr/bin/python3", "/usr/local/bin/entrypoint.py"],
    "env": {"PATH": "/usr/bin", "TZ": "UTC"},
    "exposed_ports": ["3128/tcp", "8080/tcp"],
    "user": "1000",
    "workdir": "/home/squid",
}


def gz_layer(path: Path, members: list[oci_testing.Member]) -> Path:
    path.write_bytes(gzip.compress(oci_testing.tar_bytes(members), mtime=0))
    return path


@pytest.fixture()
def spec(tmp_path: Path) -> dict[str, Any]:
    bottom = gz_layer(
        tmp_path / "bottom.tar.gz",
        [oci_testing.file("etc/os-release", b"A\n"), oci_testing.file("usr/bin/tool", b"1")],
    )
    top = gz_layer(tmp_path / "top.tar.gz", [oci_testing.file("etc/os-release", b"B\n")])
    labels = tmp_path / "labels.txt"
    labels.write_text("org.opencontainers.image.title=CephaloProxy\nkey=value=with=equals\n")
    created = tmp_path / "created.txt"
    created.write_text("1970-01-01T00:00:00Z\n")
    return {
        "architecture": "amd64",
        "os": "linux",
        "repo_tag": "cephaloproxy:test",
        "config": CONFIG,
        "labels": str(labels),
        "created": str(created),
        "layers": [str(bottom), str(top)],
    }


def write(tmp_path: Path, spec: dict[str, Any], name: str = "out") -> tuple[Path, Path]:
    spec_file = tmp_path / f"{name}.json"
    spec_file.write_text(json.dumps(spec))
    layout, tarball = tmp_path / name, tmp_path / f"{name}.tar"
    layout.mkdir()
    assert (
        oci_writer.main([str(spec_file), "--layout", str(layout), "--tarball", str(tarball)]) == 0
    )
    return layout, tarball


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_and_config(layout: Path) -> tuple[Any, Any]:
    """The written manifest and config as parsed JSON (Any: the tests index them freely)."""
    _, manifest, config, _ = oci_layout.read_manifest(layout)
    return manifest, config


def member_bytes(archive: tarfile.TarFile, name: str) -> bytes:
    extracted = archive.extractfile(name)
    assert extracted is not None, name
    return extracted.read()


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def test_every_blob_is_named_by_its_sha256_and_sized_right(
    tmp_path: Path, spec: dict[str, Any]
) -> None:
    layout, _ = write(tmp_path, spec)
    for path in (layout / "blobs" / "sha256").iterdir():
        assert sha256(path.read_bytes()) == "sha256:" + path.name
    index = json.loads((layout / "index.json").read_text())
    descriptor = index["manifests"][0]
    manifest_bytes = blob(layout, descriptor["digest"])
    assert descriptor["size"] == len(manifest_bytes)
    manifest = json.loads(manifest_bytes)
    assert manifest["config"]["size"] == len(blob(layout, manifest["config"]["digest"]))
    assert [layer["size"] for layer in manifest["layers"]] == [
        len(blob(layout, layer["digest"])) for layer in manifest["layers"]
    ]
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}


def test_diff_ids_are_the_uncompressed_layers_in_order(
    tmp_path: Path, spec: dict[str, Any]
) -> None:
    layout, _ = write(tmp_path, spec)
    manifest, config = manifest_and_config(layout)
    layer_paths = [Path(str(p)) for p in spec["layers"]]
    assert [layer["digest"] for layer in manifest["layers"]] == [
        sha256(p.read_bytes()) for p in layer_paths
    ]
    assert config["rootfs"] == {
        "type": "layers",
        "diff_ids": [sha256(gzip.decompress(p.read_bytes())) for p in layer_paths],
    }


def test_the_top_layer_wins_when_read_back(tmp_path: Path, spec: dict[str, Any]) -> None:
    """Layer order: the manifest lists them bottom first, so the later one's file is seen."""
    layout, _ = write(tmp_path, spec)
    image = oci_layout.load_image(layout)
    assert image.read_file("/etc/os-release") == b"B\n"
    assert image.lookup("/usr/bin/tool") is not None


def test_reversed_layers_give_another_image(tmp_path: Path, spec: dict[str, Any]) -> None:
    layout, _ = write(tmp_path, spec, "forward")
    reversed_spec = dict(spec, layers=list(reversed(spec["layers"])))
    other, _ = write(tmp_path, reversed_spec, "reversed")
    assert oci_layout.load_image(other).read_file("/etc/os-release") == b"A\n"
    assert oci_layout.read_manifest(layout)[0] != oci_layout.read_manifest(other)[0]


def test_config_carries_the_shared_values_under_dockers_names(
    tmp_path: Path, spec: dict[str, Any]
) -> None:
    layout, _ = write(tmp_path, spec)
    _, config = manifest_and_config(layout)
    assert (config["architecture"], config["os"], config["created"]) == (
        "amd64",
        "linux",
        "1970-01-01T00:00:00Z",
    )
    assert config["config"] == {
        "Entrypoint": CONFIG["entrypoint"],
        "Env": ["PATH=/usr/bin", "TZ=UTC"],
        "ExposedPorts": {"3128/tcp": {}, "8080/tcp": {}},
        "User": "1000",
        "WorkingDir": "/home/squid",
        "Labels": {"org.opencontainers.image.title": "CephaloProxy", "key": "value=with=equals"},
    }


def test_arm64_gets_its_platform_variant(tmp_path: Path, spec: dict[str, Any]) -> None:
    layout, _ = write(tmp_path, dict(spec, architecture="arm64"))
    _, config = manifest_and_config(layout)
    assert (config["architecture"], config["variant"]) == ("arm64", "v8")


def test_docker_archive_names_the_same_config_and_layers(
    tmp_path: Path, spec: dict[str, Any]
) -> None:
    layout, tarball = write(tmp_path, spec)
    manifest, _ = manifest_and_config(layout)
    with tarfile.open(tarball) as archive:
        entries = json.loads(member_bytes(archive, "manifest.json"))
        assert len(entries) == 1 and entries[0]["RepoTags"] == ["cephaloproxy:test"]
        config_bytes = member_bytes(archive, entries[0]["Config"])
        assert sha256(config_bytes) == manifest["config"]["digest"]
        layers = [member_bytes(archive, name) for name in entries[0]["Layers"]]
        assert [sha256(data) for data in layers] == [
            layer["digest"] for layer in manifest["layers"]
        ]
        assert all(member.mtime == 0 and member.uname == "" for member in archive.getmembers())


def test_same_inputs_same_bytes(tmp_path: Path, spec: dict[str, Any]) -> None:
    first, first_tar = write(tmp_path, spec, "first")
    second, second_tar = write(tmp_path, spec, "second")
    assert (first / "index.json").read_bytes() == (second / "index.json").read_bytes()
    assert first_tar.read_bytes() == second_tar.read_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layers": []}, "at least one layer"),
        ({"config": dict(CONFIG, healthcheck=["CMD"])}, "not known to oci_writer"),
    ],
)
def test_bad_specs_fail_with_a_message(
    tmp_path: Path,
    spec: dict[str, Any],
    change: dict[str, Any],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec_file = tmp_path / "bad.json"
    spec_file.write_text(json.dumps(spec | change))
    assert oci_writer.main([str(spec_file), "--layout", str(tmp_path / "bad")]) == 1
    assert message in capsys.readouterr().err


def test_a_layer_that_is_not_gzip_is_refused(
    tmp_path: Path, spec: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain.tar"
    plain.write_bytes(oci_testing.tar_bytes([oci_testing.file("a")]))
    spec_file = tmp_path / "plain.json"
    spec_file.write_text(json.dumps(dict(spec, layers=[str(plain)])))
    assert oci_writer.main([str(spec_file), "--layout", str(tmp_path / "plain-out")]) == 1
    assert "is not a gzipped layer" in capsys.readouterr().err


def test_config_out_is_the_config_blob(tmp_path: Path, spec: dict[str, Any]) -> None:
    spec_file = tmp_path / "c.json"
    spec_file.write_text(json.dumps(spec))
    layout = tmp_path / "c"
    assert (
        oci_writer.main(
            [str(spec_file), "--layout", str(layout), "--config-out", str(tmp_path / "config.json")]
        )
        == 0
    )
    manifest, _ = manifest_and_config(layout)
    assert sha256((tmp_path / "config.json").read_bytes()) == manifest["config"]["digest"]


# Any stack of layers: the manifest names them in the given order, each diff_id is its
# uncompressed tar's sha256, and reading back sees the topmost layer's version of each path.
_NAMES = st.sampled_from(["etc/a", "etc/b", "usr/bin/c", "usr/lib/d", "var/e"])
_LAYERS = st.lists(
    st.dictionaries(_NAMES, st.binary(max_size=40), min_size=1, max_size=4), min_size=1, max_size=4
)


@settings(max_examples=40)
@given(stack=_LAYERS)
def test_any_layer_stack_reads_back_in_order(
    tmp_path_factory: pytest.TempPathFactory, stack: list[dict[str, bytes]]
) -> None:
    tmp_path = tmp_path_factory.mktemp("stack")
    paths = [
        gz_layer(
            tmp_path / f"{n}.tar.gz", [oci_testing.file(name, data) for name, data in layer.items()]
        )
        for n, layer in enumerate(stack)
    ]
    (tmp_path / "labels.txt").write_text("")
    (tmp_path / "created.txt").write_text("1970-01-01T00:00:00Z\n")
    spec = {
        "architecture": "arm64",
        "config": CONFIG,
        "labels": str(tmp_path / "labels.txt"),
        "created": str(tmp_path / "created.txt"),
        "layers": [str(p) for p in paths],
    }
    layout, _ = write(tmp_path, spec)
    manifest, config = manifest_and_config(layout)
    assert [layer["digest"] for layer in manifest["layers"]] == [
        sha256(p.read_bytes()) for p in paths
    ]
    assert config["rootfs"]["diff_ids"] == [sha256(gzip.decompress(p.read_bytes())) for p in paths]
    image = oci_layout.load_image(layout)
    expected: dict[str, bytes] = {}
    for layer in stack:
        expected |= layer
    assert {name: image.read_file("/" + name) for name in expected} == expected
