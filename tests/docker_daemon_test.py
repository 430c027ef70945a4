"""The private Docker engine (tests/support/docker_daemon.py) against a real dockerd, with no CephaloProxy image.

A tiny statically linked C program (compiled here with gcc -static) is packed into an
image with `docker import`; it can exit with a code, serve a line on a port, or fetch a
line from an address. Skipped, with the reason, only where dockerd is not installed
(Debian package docker.io); it installs nothing. Needs root, gcc and libc6-dev.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import docker_daemon, netutil, runtime, timeouts

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE = "cephaloproxy-tiny:test"
# The same pattern the acceptance suite's `exec sh` case (no_shell_exec_test.py) uses.
NOT_FOUND = re.compile(r"executable file not found|no such file or directory", re.IGNORECASE)

needs_dockerd = pytest.mark.skipif(
    docker_daemon.dockerd_installed() is None,
    reason="dockerd is not installed (Debian package docker.io: apt-get install docker.io); this test installs nothing",
)

TINY_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "exit") == 0) return atoi(argv[2]);
  if (argc == 4 && strcmp(argv[1], "serve") == 0) {  /* serve PORT LINE: every client gets LINE */
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET; a.sin_port = htons(atoi(argv[2])); a.sin_addr.s_addr = htonl(INADDR_ANY);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) { perror("bind/listen"); return 2; }
    for (;;) { int c = accept(s, 0, 0); if (c >= 0) { dprintf(c, "%s\n", argv[3]); close(c); } }
  }
  if (argc == 4 && strcmp(argv[1], "fetch") == 0) {  /* fetch IP PORT: copy what the server sends */
    int s = socket(AF_INET, SOCK_STREAM, 0); char buf[512]; ssize_t n;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET; a.sin_port = htons(atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) { fprintf(stderr, "bad address\n"); return 2; }
    if (connect(s, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 3; }
    while ((n = read(s, buf, sizeof buf)) > 0) fwrite(buf, 1, n, stdout);
    return 0;
  }
  fprintf(stderr, "usage: exit N | serve PORT LINE | fetch IP PORT\n");
  return 64;
}
"""

# Runs in the engine's network namespace: connect to a published port, retrying while
# docker-proxy comes up, and print the line the container serves.
CONNECT = """
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as s:
            data = s.recv(200)
        if data:
            print(data.decode().strip()); break
    except OSError as error:
        if time.monotonic() > deadline: sys.exit(f"no answer: {error!r}")
    time.sleep(0.2)
"""

# Runs in the engine's network namespace: a one-shot server on the gateway address
# (IP_FREEBIND, like the suite's test servers), printing its port, then sending a token.
GATEWAY_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.IPPROTO_IP, 15, 1)
s.bind((sys.argv[1], 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
s.settimeout(float(sys.argv[3]))
conn, _ = s.accept(); conn.sendall(sys.argv[2].encode() + b"\\n"); conn.close()
"""


@pytest.fixture(scope="module")
def tiny_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tar holding only /tiny, a static binary (the image has nothing else: no shell)."""
    work = tmp_path_factory.mktemp("tiny")
    (work / "tiny.c").write_text(TINY_C, encoding="utf-8")
    try:
        built = subprocess.run(
            ["gcc", "-static", "-O2", "-o", str(work / "tiny"), str(work / "tiny.c")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    except FileNotFoundError:
        pytest.fail(
            "gcc is not installed: this test compiles its image's program (apt-get install gcc libc6-dev)"
        )
    assert built.returncode == 0, f"gcc -static failed (needs libc6-dev):\n{built.stderr}"
    rootfs = work / "rootfs.tar"
    with tarfile.open(rootfs, "w") as archive:
        archive.add(work / "tiny", arcname="tiny")
    return rootfs


def _docker(
    engine: docker_daemon.DockerDaemon, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        engine.docker_argv(*args), env=engine.environ(), capture_output=True, text=True,
        timeout=timeouts.scaled(timeout), check=False,
    )  # fmt: skip


def _import_tiny(engine: docker_daemon.DockerDaemon, rootfs: Path) -> None:
    done = _docker(engine, "import", "--change", 'ENTRYPOINT ["/tiny"]', str(rootfs), IMAGE)
    assert done.returncode == 0, done.stderr


def _serve(
    engine: docker_daemon.DockerDaemon, name: str, line: str, publish: str | None = None
) -> None:
    flags = ["--publish", publish] if publish else []
    done = _docker(engine, "run", "--detach", "--name", name, *flags, IMAGE, "serve", "8000", line)
    assert done.returncode == 0, done.stderr


def _inspect(engine: docker_daemon.DockerDaemon, name: str) -> dict[str, object]:
    done = _docker(engine, "inspect", name)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)[0]
    assert isinstance(data, dict)
    return data


def _container_pid(engine: docker_daemon.DockerDaemon, name: str) -> int:
    state = _inspect(engine, name)["State"]
    assert isinstance(state, dict) and state["Running"], state
    return int(state["Pid"])


@pytest.fixture(scope="module")
def engine(tiny_rootfs: Path) -> Iterator[docker_daemon.DockerDaemon]:
    daemon = docker_daemon.DockerDaemon().start()
    try:
        _import_tiny(daemon, tiny_rootfs)
        yield daemon
    finally:
        daemon.stop()


def _wrapper(engine: docker_daemon.DockerDaemon) -> runtime.ContainerRuntime:
    """The suite's own CLI wrapper, pointed at this engine the way `run --` points the suite."""
    detection = runtime.detect_runtime(engine.environ())
    assert detection.spec is not None, detection.reason()
    assert detection.spec.name == "docker"
    return runtime.ContainerRuntime(detection.spec)


@needs_dockerd
def test_container_exit_codes_reach_the_cli(engine: docker_daemon.DockerDaemon) -> None:
    for code in (0, 42):
        done = _docker(engine, "run", "--rm", IMAGE, "exit", str(code))
        assert done.returncode == code, done.stderr
    info = _docker(engine, "info", "--format", "{{.Driver}} {{.CgroupDriver}}")
    assert info.stdout.split() == ["vfs", "cgroupfs"], info


@needs_dockerd
def test_published_port_answers_in_the_engine_namespace_only(
    engine: docker_daemon.DockerDaemon,
) -> None:
    port = netutil.free_port()
    token = f"published-{os.getpid()}"
    _serve(engine, "tiny-published", token, publish=f"127.0.0.1:{port}:8000")
    try:
        inside = engine.run_in_netns(
            [sys.executable, "-c", CONNECT, str(port), str(timeouts.scaled(30))], timeout=120
        )
        assert (inside.returncode, inside.stdout.strip()) == (0, token), inside.stderr
        # From this (the host's) namespace the port is not there: why the suite runs under `run --`.
        assert not netutil.port_accepts(netutil.LOOPBACK, port)
    finally:
        _docker(engine, "rm", "--force", "tiny-published")


@needs_dockerd
def test_containers_reach_a_server_on_the_gateway_address(
    engine: docker_daemon.DockerDaemon,
) -> None:
    gateway = _wrapper(engine).gateway_address()
    assert gateway is not None, "no gateway found for the default bridge"
    routes = engine.run_in_netns(["ip", "-4", "-o", "addr", "show", "docker0"])
    assert f"inet {gateway}/" in routes.stdout, (gateway, routes.stdout)

    token = f"gateway-{os.getpid()}"
    server = subprocess.Popen(
        [engine.tool("nsenter"), f"--net={engine.netns}", sys.executable, "-c", GATEWAY_SERVER,
         gateway, token, str(timeouts.scaled(60))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        assert port.isdigit(), server.stderr.read() if server.stderr else ""
        fetched = _docker(engine, "run", "--rm", IMAGE, "fetch", gateway, port)
        assert (fetched.returncode, fetched.stdout.strip()) == (0, token), fetched.stderr
    finally:
        server.kill()
        server.wait(timeout=30)


@needs_dockerd
def test_exec_of_a_missing_program_exits_with_the_docker_code(
    engine: docker_daemon.DockerDaemon,
) -> None:
    wrapper = _wrapper(engine)
    assert wrapper.exec_not_found_exit_code == 126
    _serve(engine, "tiny-exec", "x")
    try:
        for program in ("/bin/sh", "sh"):
            done = wrapper.exec("tiny-exec", [program, "-c", "true"])
            assert done.returncode == 126, (program, done.returncode, done.stderr)
            # docker's CLI prints the OCI error on stdout, not stderr (docker/cli#2025).
            assert NOT_FOUND.search(done.stdout), (done.stdout, done.stderr)
        assert wrapper.state("tiny-exec").running, "a failed exec must not stop the container"
        # Not the same as `run` with a missing entrypoint, which is 127 on docker too.
        done = _docker(engine, "run", "--rm", "--entrypoint", "/bin/sh", IMAGE)
        assert done.returncode == 127, (done.returncode, done.stderr)
    finally:
        _docker(engine, "rm", "--force", "tiny-exec")


def _assert_nothing_left(
    engine: docker_daemon.DockerDaemon, runtime_dir: Path, pids: list[int]
) -> None:
    alive = [pid for pid in pids if docker_daemon._is_running(pid)]
    assert alive == [], f"still running after stop: {alive}"
    marker = str(runtime_dir)
    named = [
        info.describe()
        for info in docker_daemon.process_table().values()
        if marker in info.cmdline and info.state != "Z"
    ]
    assert named == [], named
    mounted = [point for point in docker_daemon.mount_points() if point.startswith(marker)]
    assert mounted == [], mounted
    assert not runtime_dir.exists()


def _engine_processes(daemon: docker_daemon.DockerDaemon, container_pid: int) -> list[int]:
    """dockerd, containerd, a shim, docker-proxy and the container: the stop check must see them all first."""
    related = {info.pid: info.cmdline for info in daemon.related_processes()}
    kinds = {
        "dockerd": [pid for pid, cmd in related.items() if "/dockerd " in cmd],
        "containerd": [pid for pid, cmd in related.items() if cmd.startswith("containerd ")],
        "shim": [pid for pid, cmd in related.items() if "containerd-shim-runc-v2" in cmd],
        "docker-proxy": [pid for pid, cmd in related.items() if "docker-proxy" in cmd],
        "container": [pid for pid in related if pid == container_pid],
    }
    assert all(kinds.values()), (kinds, related)
    return sorted(related)


@needs_dockerd
def test_stop_leaves_nothing_running_or_mounted(tiny_rootfs: Path) -> None:
    daemon = docker_daemon.DockerDaemon().start()
    runtime_dir = daemon.runtime_dir
    assert runtime_dir is not None
    try:
        _import_tiny(daemon, tiny_rootfs)
        _serve(daemon, "tiny-running-at-stop", "x", publish=f"127.0.0.1:{netutil.free_port()}:8000")
        pids = _engine_processes(daemon, _container_pid(daemon, "tiny-running-at-stop"))
        assert [p for p in daemon.leftover_mounts() if p != str(daemon.netns)], (
            "dockerd mounts nothing?"
        )
    finally:
        report = daemon.stop()
    assert report.daemon_exited, "dockerd must end on SIGTERM"
    assert report.killed == () and report.unmounted == (), (
        f"dockerd should clean up after itself: {report}"
    )
    _assert_nothing_left(daemon, runtime_dir, pids)
    assert daemon.stop() == docker_daemon.StopReport(False, (), (), (), ()), (
        "a second stop is a no-op"
    )


@needs_dockerd
def test_stop_after_dockerd_was_killed_removes_its_orphans(tiny_rootfs: Path) -> None:
    daemon = docker_daemon.DockerDaemon().start()
    runtime_dir = daemon.runtime_dir
    assert runtime_dir is not None and daemon.pid is not None
    try:
        _import_tiny(daemon, tiny_rootfs)
        _serve(daemon, "tiny-orphaned", "x", publish=f"127.0.0.1:{netutil.free_port()}:8000")
        container_pid = _container_pid(daemon, "tiny-orphaned")
        pids = _engine_processes(daemon, container_pid)
        os.kill(daemon.pid, signal.SIGKILL)  # a crashed engine: no shutdown of its own
        # Wait for the whole process: dockerd's main thread turns zombie before its other threads end.
        assert daemon.wait_for_daemon(timeouts.scaled(30)), "dockerd survived SIGKILL"
    finally:
        report = daemon.stop()
    assert not report.daemon_exited
    assert any(f"pid {container_pid} " in line for line in report.killed), report.killed
    assert any("containerd-shim-runc-v2" in line for line in report.killed), report.killed
    assert report.unmounted, (
        "dockerd's own mounts (data root, container namespaces) must be left to clean"
    )
    _assert_nothing_left(daemon, runtime_dir, pids)


@needs_dockerd
def test_cli_run_passes_the_exit_code_and_runs_inside_the_engine_namespace() -> None:
    host_netns = os.readlink("/proc/self/ns/net")
    check = (
        "import os, subprocess, sys\n"
        f"assert os.readlink('/proc/self/ns/net') != {host_netns!r}, 'not in the engine namespace'\n"
        "assert os.environ['CEPHALOPROXY_CONTAINER_RUNTIME'] == 'docker'\n"
        "info = subprocess.run(['docker', 'info', '--format', '{{.Driver}}'], capture_output=True, text=True)\n"
        "assert info.stdout.strip() == 'vfs', (os.environ.get('DOCKER_HOST'), info.stderr)\n"
        "sys.exit(3)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != docker_daemon.RUNTIME_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.docker_daemon", "run", "--", sys.executable, "-c", check],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeouts.scaled(180), check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    match = re.search(r"--exec-root=(\S+)/exec ", done.stderr)
    assert match, done.stderr
    runtime_dir = Path(match.group(1))
    assert not runtime_dir.exists(), f"{runtime_dir} left behind"
    assert not [
        info for info in docker_daemon.process_table().values() if str(runtime_dir) in info.cmdline
    ]


def _fake_dockerd(directory: Path, body: str) -> dict[str, str]:
    """An environment whose PATH finds a stand-in dockerd first (the other tools stay real)."""
    directory.mkdir()
    fake = directory / "dockerd"
    fake.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n", encoding="utf-8")
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{directory}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}


@needs_dockerd
def test_a_dockerd_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    env = _fake_dockerd(
        tmp_path / "bin", 'print("failed to start daemon: planted failure"); sys.exit(1)'
    )
    daemon = docker_daemon.DockerDaemon(environ=env)
    with pytest.raises(docker_daemon.DockerDaemonError) as raised:
        daemon.start()
    assert "exited with code 1" in str(raised.value) and "planted failure" in str(raised.value)
    assert daemon.runtime_dir is None, "a failed start must clean up its runtime dir and namespace"


@needs_dockerd
def test_a_dockerd_that_never_answers_times_out_and_is_stopped(tmp_path: Path) -> None:
    env = _fake_dockerd(tmp_path / "bin", "time.sleep(600)")
    daemon = docker_daemon.DockerDaemon(environ=env, start_timeout=2)
    with pytest.raises(docker_daemon.DockerDaemonError) as raised:
        daemon.start()
    assert "did not answer `docker info` within 2 s" in str(raised.value)
    assert timeouts.SCALE_ENV in str(raised.value)
    assert daemon.pid is not None and not docker_daemon._is_running(daemon.pid)
    assert daemon.runtime_dir is None


def test_missing_tools_are_named_with_their_packages(tmp_path: Path) -> None:
    with pytest.raises(docker_daemon.DockerDaemonError) as raised:
        docker_daemon.find_tools({"PATH": str(tmp_path)}, extra_dirs=())
    message = str(raised.value)
    assert "dockerd (Debian package docker.io)" in message
    assert "containerd-shim-runc-v2 (Debian package containerd)" in message
    assert "apt-get install -y containerd docker.io iproute2 mount runc util-linux" in message


def test_gateway_from_inspect_uses_the_subnet_when_docker_leaves_it_out() -> None:
    assert (
        runtime.gateway_from_inspect("|172.17.0.0/16 ") == "172.17.0.1"
    )  # docker.io 20.10, auto-numbered
    assert (
        runtime.gateway_from_inspect("10.88.0.1|10.88.0.0/16 ") == "10.88.0.1"
    )  # podman, or docker --bip
    assert runtime.gateway_from_inspect("|fd00::/64 |192.168.5.0/24 ") == "192.168.5.1"
    assert runtime.gateway_from_inspect("") is None
