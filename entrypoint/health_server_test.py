"""The health server and `healthcheck --check`, run as real processes against real sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from entrypoint.testing import free_port, http_get, session_processes, wait_for_status, wait_until

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.Popen(
        [sys.executable, str(PACKAGE_DIR / "healthcheck.py"), *args],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    for pid in session_processes(process.pid):
        os.kill(pid, 9)


class Scene:
    """A stand-in 'squid' (a sleeping python child), a listening proxy socket, dirs and a config."""

    def __init__(self, tmp_path: Path) -> None:
        self.sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        self.comm = Path(f"/proc/{self.sleeper.pid}/comm").read_text().strip()
        self.pid_file = tmp_path / "squid.pid"
        self.pid_file.write_text(f"{self.sleeper.pid}\n")
        self.proxy = socket.socket()
        self.proxy.bind(("127.0.0.1", 0))
        self.proxy.listen(16)
        self.cache_dir = tmp_path / "cache"
        self.cache_dir.mkdir()
        self.config = tmp_path / "squid.conf"
        self.config.write_text("http_port 3128\n")
        self.port = free_port()
        self.server = healthcheck(
            "--port", str(self.port), "--pid-file", str(self.pid_file), "--squid-comm", self.comm,
            "--proxy-port", str(self.proxy.getsockname()[1]), "--cache-dir", str(self.cache_dir),
            "--config", str(self.config), "--log-level", "DEBUG",
        )
        self.url = f"http://127.0.0.1:{self.port}"
        assert wait_for_status(f"{self.url}/health", 200, 30)[0] == 200

    def close(self) -> None:
        stop(self.server)
        self.sleeper.kill()
        self.sleeper.wait(10)
        self.proxy.close()


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    created = Scene(tmp_path)
    try:
        yield created
    finally:
        created.close()


def test_health_and_ready_are_200_when_everything_is_fine(scene: Scene) -> None:
    assert http_get(f"{scene.url}/health")[:2] == (200, "OK\n")
    status, body, headers = http_get(f"{scene.url}/ready")
    assert (status, body) == (200, "READY\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


def test_head_and_unknown_paths(scene: Scene) -> None:
    status, body, headers = http_get(f"{scene.url}/health", method="HEAD")
    assert (status, body, headers["Content-Length"]) == (200, "", "3")
    assert http_get(f"{scene.url}/metrics")[:2] == (404, "Not Found\n")
    assert http_get(f"{scene.url}/ready", method="HEAD")[0] == 200


def test_ready_lists_every_failed_check(scene: Scene) -> None:
    scene.proxy.close()
    os.chmod(scene.config, 0)
    os.chmod(scene.cache_dir, 0o500)
    scene.sleeper.kill()
    scene.sleeper.wait(10)
    try:
        status, body, _ = http_get(f"{scene.url}/ready")
        assert status == 503
        lines = body.splitlines()
        assert lines[0] == "NOT READY"
        assert any(line.startswith("- squid process:") for line in lines)
        assert any(line.startswith("- proxy port:") for line in lines)
        if os.geteuid() != 0:  # root may write and read anything
            assert any(line.startswith("- cache dir:") for line in lines)
            assert any(line.startswith("- config:") for line in lines)
        status, body, _ = http_get(f"{scene.url}/health")
        assert status == 503 and body.startswith("NOT OK: squid pid")
    finally:
        os.chmod(scene.config, 0o644)
        os.chmod(scene.cache_dir, 0o755)


def test_a_slow_client_does_not_block_others(scene: Scene) -> None:
    stalled = socket.create_connection(("127.0.0.1", scene.port))
    try:
        stalled.sendall(b"GET /health HT")  # never finishes its request line
        started = time.monotonic()
        assert http_get(f"{scene.url}/health", timeout=4)[0] == 200
        # Answered while the stalled client still holds its connection: not
        # queued behind it (a correctness bound, far above any normal answer).
        assert time.monotonic() - started < 4
    finally:
        stalled.close()


def test_check_exits_0_when_healthy_and_1_otherwise(scene: Scene) -> None:
    env = dict(os.environ, HEALTH_PORT=str(scene.port))
    checker = healthcheck("--check", env=env)
    assert checker.wait(30) == 0
    scene.pid_file.write_text("999999999\n")
    checker = healthcheck("--check", env=env)
    assert checker.wait(30) == 1
    assert b"503" in checker.stdout.read()  # type: ignore[union-attr]
    closed = dict(os.environ, HEALTH_PORT=str(free_port()))
    checker = healthcheck("--check", env=closed)
    assert checker.wait(30) == 1


def test_sigterm_stops_the_server(scene: Scene) -> None:
    scene.server.terminate()
    assert scene.server.wait(10) == 0
    assert wait_until(lambda: not session_processes(scene.server.pid), 10)
