"""Runtime detection and the CLI wrapper, against fake `docker`/`podman` executables.

The fakes are a stand-in: this machine has a docker CLI but no Docker engine, and the
detection logic must be checked without touching a real engine. They are small Python
scripts that record their argv and CONTAINERS_CONF and answer like the real CLIs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import sys
from pathlib import Path

from tests.support import runtime

FAKE = """#!{python}
import json, os, sys
record = os.environ.get("FAKE_RECORD")
if record:
    with open(record, "a") as handle:
        handle.write(json.dumps({{"argv": sys.argv, "conf": os.environ.get("CONTAINERS_CONF")}}) + "\\n")
args = [a for a in sys.argv[1:]]
if "--runtime" in args:
    index = args.index("--runtime")
    del args[index:index + 2]
if args[:1] == ["info"]:
    if {engine_up}:
        print("engine ok")
        sys.exit(0)
    print("Cannot connect to the Docker daemon at unix:///var/run/docker.sock", file=sys.stderr)
    sys.exit(1)
if args[:1] == ["load"]:
    print("Loaded image: localhost/cephaloproxy:latest")
    sys.exit(0)
if args[:1] == ["inspect"]:
    print(json.dumps([{{"State": {{"Status": "exited", "Running": False, "ExitCode": 3}}}}]))
    sys.exit(0)
sys.exit(0)
"""


def _fake(directory: Path, name: str, engine_up: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(FAKE.format(python=sys.executable, engine_up=engine_up), encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@dataclasses.dataclass(frozen=True)
class Call:
    """One run of a fake, as it recorded it: its argv and the CONTAINERS_CONF it saw."""

    argv: list[str]
    conf: str | None


def _calls(path: Path) -> list[Call]:
    calls = []
    for line in path.read_text().splitlines():
        fields = json.loads(line)
        argv, conf = fields["argv"], fields["conf"]
        assert isinstance(argv, list) and all(isinstance(arg, str) for arg in argv), line
        assert conf is None or isinstance(conf, str), line
        calls.append(Call(argv, conf))
    return calls


def test_docker_cli_without_engine_falls_back_to_podman_with_runc_and_conf(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "docker", engine_up=False)
    podman = _fake(bin_dir, "podman", engine_up=True)
    runc = _fake(bin_dir, "runc", engine_up=True)
    record = tmp_path / "record.jsonl"
    environ = {"PATH": str(bin_dir), "FAKE_RECORD": str(record)}

    detection = runtime.detect_runtime(
        environ, conf_dir=tmp_path / "conf", probe_timeout=30, extra_dirs=()
    )

    assert detection.spec is not None, detection.rejected
    assert detection.spec.name == "podman"
    assert detection.spec.base_argv == (str(podman), "--runtime", str(runc))
    assert len(detection.rejected) == 1 and "docker" in detection.rejected[0]
    assert "Cannot connect to the Docker daemon" in detection.rejected[0]
    conf = Path(detection.spec.env["CONTAINERS_CONF"])
    assert conf.read_text() == "[containers]\ndefault_ulimits = []\n"
    podman_calls = [call for call in _calls(record) if Path(call.argv[0]).name == "podman"]
    assert podman_calls and podman_calls[0].conf == str(conf), (
        "the probe must already use the written conf"
    )


def test_existing_containers_conf_is_honoured(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "podman", engine_up=True)
    mine = tmp_path / "mine.conf"
    mine.write_text("[containers]\n")
    detection = runtime.detect_runtime(
        {"PATH": str(bin_dir), "CONTAINERS_CONF": str(mine)}, conf_dir=tmp_path / "c", extra_dirs=()
    )
    assert detection.spec is not None
    assert detection.spec.env["CONTAINERS_CONF"] == str(mine)
    assert "--runtime" not in detection.spec.base_argv, (
        "no runc on PATH: keep podman's default runtime"
    )
    assert not (tmp_path / "c" / "containers.conf").exists()


def test_docker_with_engine_wins(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    docker = _fake(bin_dir, "docker", engine_up=True)
    _fake(bin_dir, "podman", engine_up=True)
    detection = runtime.detect_runtime(
        {"PATH": str(bin_dir)}, conf_dir=tmp_path / "c", extra_dirs=()
    )
    assert detection.spec is not None
    assert (detection.spec.name, detection.spec.base_argv) == ("docker", (str(docker),))
    assert "CONTAINERS_CONF" not in detection.spec.env


def test_forced_runtime_and_nothing_found(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "docker", engine_up=True)
    forced = runtime.detect_runtime(
        {"PATH": str(bin_dir), runtime.RUNTIME_ENV: "podman"},
        conf_dir=tmp_path / "c",
        extra_dirs=(),
    )
    assert forced.spec is None
    assert forced.reason() == f"${runtime.RUNTIME_ENV}=podman: not found on PATH"

    empty = tmp_path / "empty"
    empty.mkdir()
    none = runtime.detect_runtime({"PATH": str(empty)}, conf_dir=tmp_path / "c", extra_dirs=())
    assert none.spec is None
    assert none.reason() == "docker: not found on PATH; podman: not found on PATH"


def test_system_dirs_are_searched_after_path(tmp_path: Path) -> None:
    # Bazel's test PATH may lack /usr/sbin; extra dirs make runc and the CLIs findable.
    system = tmp_path / "sbin"
    podman = _fake(system, "podman", engine_up=True)
    runc = _fake(system, "runc", engine_up=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    detection = runtime.detect_runtime(
        {"PATH": str(empty)}, conf_dir=tmp_path / "c", extra_dirs=(str(system),)
    )
    assert detection.spec is not None
    assert detection.spec.base_argv == (str(podman), "--runtime", str(runc))


def test_wrapper_builds_argv_and_parses_answers(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "podman", engine_up=True)
    record = tmp_path / "record.jsonl"
    detection = runtime.detect_runtime(
        {"PATH": str(bin_dir), "FAKE_RECORD": str(record)}, conf_dir=tmp_path / "c", extra_dirs=()
    )
    assert detection.spec is not None
    wrapper = runtime.ContainerRuntime(detection.spec)

    assert wrapper.load(tmp_path / "image.tar") == ["localhost/cephaloproxy:latest"]
    assert wrapper.state("x") == runtime.ContainerState(status="exited", running=False, exit_code=3)
    options = runtime.RunOptions(
        name="n1",
        env={"LOG_LEVEL": "DEBUG"},
        user="1234567:0",
        publish=[runtime.PortMapping("127.0.0.1", 40001, 3128)],
        mounts=[runtime.Mount(tmp_path, "/etc/squid/ssl_cert")],
        tmpfs=["/tmp"],
        read_only=True,
        add_hosts={"a.test": "10.88.0.1"},
    )
    wrapper.run_detached("img:1", options)
    last = _calls(record)[-1].argv
    assert last[1:] == [
        "run", "--detach", "--name", "n1", "--env", "LOG_LEVEL=DEBUG", "--user", "1234567:0",
        "--publish", "127.0.0.1:40001:3128/tcp", "--volume", f"{tmp_path}:/etc/squid/ssl_cert:ro",
        "--tmpfs", "/tmp", "--read-only", "--add-host", "a.test:10.88.0.1", "img:1",
    ]  # fmt: skip


def test_parse_loaded_refs_docker_and_podman_formats() -> None:
    assert runtime.parse_loaded_refs("Loaded image: cephaloproxy:latest\n") == [
        "cephaloproxy:latest"
    ]
    assert runtime.parse_loaded_refs(
        "Getting image source signatures\nLoaded image(s): a:1,b:2\n"
    ) == ["a:1", "b:2"]
    assert runtime.parse_loaded_refs("Loaded image ID: sha256:abc\n") == ["sha256:abc"]
    assert runtime.parse_loaded_refs("nothing here") == []


def test_timeout_is_reported_with_the_command(tmp_path: Path) -> None:
    slow = tmp_path / "bin" / "podman"
    slow.parent.mkdir()
    slow.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    slow.chmod(0o755)
    spec = runtime.RuntimeSpec("podman", (str(slow),), dict(os.environ))
    wrapper = runtime.ContainerRuntime(spec)
    try:
        wrapper.command(["ps"], timeout=0.5)
    except runtime.ContainerRuntimeError as error:
        assert "timed out after" in str(error) and "ps" in str(error)
    else:
        raise AssertionError("a hung runtime command must raise")
