"""The health server and `healthcheck --check`, run as real processes against real sockets."""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import given, strategies as st

from entrypoint.freezer import freeze_problem, frozen
from entrypoint.health_attack import Attack, probe, process_status, raise_fd_limit, run_probes
from entrypoint.health_server import (
    EXCHANGE_TIMEOUT,
    MAX_CONNECTIONS,
    HealthTargets,
    printable,
    respond,
)
from entrypoint.squid_serving import LIVENESS_BOUND, STALL_READY, SquidWatch

from entrypoint.testing import (  # noqa: F401 - fixtures
    UNPRIVILEGED_GID,
    UNPRIVILEGED_UID,
    Workspace,
    free_port,
    http_get,
    process_state,
    process_uid,
    python_for_child,
    running_as_root,
    session_processes,
    unprivileged_access_problem,
    wait_for_status,
    wait_until,
    workspace,
)


def as_entrypoint_user() -> dict[str, object]:
    """Popen options: as root, the entrypoint's (and so Squid's and the health server's) UID and GID."""
    if not running_as_root():
        return {}
    return {"user": UNPRIVILEGED_UID, "group": UNPRIVILEGED_GID, "extra_groups": []}


def healthcheck(
    workspace: Workspace,
    *args: str,
    env: dict[str, str] | None = None,
    python_options: tuple[str, ...] = (),
    output: object = subprocess.PIPE,
    stderr: object = subprocess.STDOUT,
) -> subprocess.Popen[bytes]:
    """The image's healthcheck.py (a workspace copy) as the entrypoint's user."""
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = str(workspace.lib)
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.Popen(  # type: ignore[call-overload]
        [python_for_child(), *python_options, str(workspace.bin / "healthcheck.py"), *args],
        env=environment,
        stdout=output,
        stderr=stderr,
        start_new_session=True,
        cwd=str(workspace.root),
        **as_entrypoint_user(),
    )


def raw_request(
    port: int, request: bytes, host: str = "127.0.0.1"
) -> tuple[str, dict[str, str], bytes]:
    """Send `request` as is; returns (status line, headers, body) of the answer."""
    with socket.create_connection((host, port), 10) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


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


# A stand-in Squid: one process that listens on the proxy port and sleeps (like `squid -N`).
STAND_IN = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16)\n"
    "print(s.getsockname()[1], flush=True)\n"
    "time.sleep(600)\n"
)


class Scene:
    """A stand-in 'squid' holding the proxy's LISTEN socket, its pid file, dirs, a config, the server.

    All of it runs as the entrypoint's user (when the tests run as root), so the checks are
    made with the permissions the health server has in the container.
    """

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.sleeper = subprocess.Popen(
            [python_for_child(), "-c", STAND_IN],
            stdout=subprocess.PIPE,
            cwd=str(workspace.root),
            **as_entrypoint_user(),  # type: ignore[call-overload]
        )
        self.proxy_port = int(self.sleeper.stdout.readline())
        self.comm = Path(f"/proc/{self.sleeper.pid}/comm").read_text().strip()
        self.pid_file = workspace.var / "squid.pid"
        self.pid_file.write_text(f"{self.sleeper.pid}\n")
        self.cache_dir = workspace.make_dir(workspace.var / "cache")
        self.config = workspace.etc / "squid.conf"
        self.config.write_text("http_port 3128\n")
        os.chmod(self.config, 0o664)
        self.port = free_port()
        self.log = open(workspace.var / "health.log", "wb")
        self.server = self.start_server(self.port, output=self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        if wait_for_status(f"{self.url}/health", 200, 30)[0] != 200:
            self.close()  # the fixture never yields: nothing else would stop them
            raise AssertionError(f"the health server does not answer 200 on {self.url}/health")

    def start_server(
        self, port: int, output: object, python_options: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        return healthcheck(
            self.workspace,
            "--port",
            str(port),
            "--pid-file",
            str(self.pid_file),
            "--squid-comm",
            self.comm,
            "--proxy-port",
            str(self.proxy_port),
            "--cache-dir",
            str(self.cache_dir),
            "--config",
            str(self.config),
            "--log-level",
            "DEBUG",
            output=output,
            python_options=python_options,
        )

    def close(self) -> None:
        stop(self.server)
        self.log.close()
        if self.sleeper.poll() is None:
            os.kill(self.sleeper.pid, signal.SIGCONT)
            self.sleeper.kill()
        self.sleeper.wait(10)


@pytest.fixture
def scene(workspace: Workspace) -> Iterator[Scene]:
    problem = unprivileged_access_problem()
    if problem:
        pytest.skip(problem)
    created = Scene(workspace)
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
        # Checked as the entrypoint's user: root could still write and read both.
        assert f"- cache dir: {scene.cache_dir} is not writable" in lines
        assert any(line.startswith(f"- config: {scene.config} is not readable") for line in lines)
        status, body, _ = http_get(f"{scene.url}/health")
        assert status == 503 and body.startswith("NOT OK: squid pid")
    finally:
        os.chmod(scene.config, 0o644)
        os.chmod(scene.cache_dir, 0o755)


def test_a_fifo_at_the_config_path_fails_ready_at_once_and_never_blocks_the_server(
    scene: Scene,
) -> None:
    """One thread answers every client: a blocking open of a FIFO swapped in for the config
    would hang every probe, /health included."""
    os.unlink(scene.config)
    os.mkfifo(scene.config, 0o644)
    try:
        for _ in range(3):
            status, body, _ = http_get(f"{scene.url}/ready", timeout=3)
            assert status == 503 and f"- config: {scene.config} is not readable" in body, body
            assert "FIFO" in body, body
        assert http_get(f"{scene.url}/health", timeout=3)[0] == 200
    finally:
        os.unlink(scene.config)
        scene.config.write_text("http_port 3128\n")


def test_cache_dir_unwritable_for_the_servers_user_fails_ready(scene: Scene) -> None:
    if running_as_root():
        assert process_uid(scene.server.pid) == UNPRIVILEGED_UID
    os.chmod(scene.cache_dir, 0o550)  # group 0 may read and search, not write
    try:
        status, body, _ = http_get(f"{scene.url}/ready")
        assert (status, body) == (
            503,
            f"NOT READY\n- cache dir: {scene.cache_dir} is not writable\n",
        )
        assert http_get(f"{scene.url}/health")[:2] == (200, "OK\n")  # liveness is about Squid only
    finally:
        os.chmod(scene.cache_dir, 0o770)
    assert http_get(f"{scene.url}/ready")[:2] == (200, "READY\n")


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
    checker = healthcheck(scene.workspace, "--check", env=env)
    assert checker.wait(30) == 0
    scene.pid_file.write_text("999999999\n")
    checker = healthcheck(scene.workspace, "--check", env=env)
    assert checker.wait(30) == 1
    assert b"503" in checker.stdout.read()  # type: ignore[union-attr]
    closed = dict(os.environ, HEALTH_PORT=str(free_port()))
    checker = healthcheck(scene.workspace, "--check", env=closed)
    assert checker.wait(30) == 1


def test_check_prints_whatever_answers_as_one_clean_line(scene: Scene) -> None:
    """Anything may answer on HEALTH_PORT (a squatter): its body must not drive the terminal."""
    body = b"\x1b[2Jwiped\rforged" + "\u2028x".encode()
    answer = b"HTTP/1.1 503 X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
        len(body),
        body,
    )
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        checker = healthcheck(
            scene.workspace, "--check", env=dict(os.environ, HEALTH_PORT=str(port))
        )
        squatter.settimeout(30)
        conn, _ = squatter.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(answer)
        output = checker.communicate(timeout=30)[0].decode()
    assert checker.returncode == 1
    assert (
        output.count("\n") == 1
        and "\x1b" not in output
        and "\r" not in output
        and "\u2028" not in output
    ), repr(output)
    assert "\\x1b[2Jwiped\\rforged" in output, repr(output)


def test_sigterm_stops_the_server(scene: Scene) -> None:
    scene.server.terminate()
    assert scene.server.wait(10) == 0
    assert wait_until(lambda: not session_processes(scene.server.pid), 10)


def test_a_stopped_squid_fails_ready_at_once(scene: Scene) -> None:
    os.kill(scene.sleeper.pid, signal.SIGSTOP)
    assert wait_until(lambda: process_state(scene.sleeper.pid) == "T", 10)
    status, body, _ = http_get(f"{scene.url}/ready")
    assert status == 503
    assert f"- proxy port: no runnable Squid process listens on port {scene.proxy_port}" in body
    assert f"pid {scene.sleeper.pid} stopped" in body
    os.kill(scene.sleeper.pid, signal.SIGCONT)
    assert http_get(f"{scene.url}/ready")[:2] == (200, "READY\n")


def test_another_process_on_the_proxy_port_is_not_squid(scene: Scene) -> None:
    # Squid gone, someone else listens on its port: the kernel would accept a connect, /proc says no.
    scene.sleeper.kill()
    scene.sleeper.wait(10)
    impostor = socket.socket()
    impostor.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    impostor.bind(("127.0.0.1", scene.proxy_port))
    impostor.listen(4)
    stand_in = subprocess.Popen(
        [python_for_child(), "-c", "import time; time.sleep(600)"], **as_entrypoint_user()
    )  # type: ignore[call-overload]
    try:
        scene.pid_file.write_text(f"{stand_in.pid}\n")  # a live 'squid' that does not listen
        status, body, _ = http_get(f"{scene.url}/ready")
        assert status == 503
        assert f"- proxy port: no Squid process listens on port {scene.proxy_port}" in body
    finally:
        stand_in.kill()
        stand_in.wait(10)
        impostor.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "BREW"])
@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_other_methods_get_405_with_allow_in_text_plain(
    scene: Scene, method: str, path: str
) -> None:
    request = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".encode()
    status, headers, body = raw_request(scene.port, request)
    assert status == "HTTP/1.1 405 Method Not Allowed"
    assert headers["Allow"] == "GET, HEAD"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body == b"Method Not Allowed: use GET, HEAD\n"
    assert int(headers["Content-Length"]) == len(body)


@pytest.mark.parametrize(
    ("request_bytes", "status_line", "body"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404 Not Found", b"Not Found\n"),
        (b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404 Not Found", b"Not Found\n"),
        (b"GET /health?verbose=1 HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK", b"OK\n"),
        (b"garbage\r\n\r\n", "HTTP/1.1 400 Bad Request", b"Bad Request\n"),
        (b"GET /health\r\n\r\n", "HTTP/1.1 400 Bad Request", b"Bad Request\n"),
        (
            b"GET /health HTTP/2.0\r\n\r\n",
            "HTTP/1.1 505 HTTP Version Not Supported",
            b"HTTP Version Not Supported\n",
        ),
        (
            b"GET /health HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
            "HTTP/1.1 431 Request Header Fields Too Large",
            b"Request Header Fields Too Large\n",
        ),
    ],
    ids=[
        "unknown-path",
        "unknown-path-post",
        "query",
        "garbage",
        "http-0.9",
        "http-2",
        "huge-head",
    ],
)
def test_every_answer_is_text_plain(
    scene: Scene, request_bytes: bytes, status_line: str, body: bytes
) -> None:
    status, headers, answer = raw_request(scene.port, request_bytes)
    assert (status, answer) == (status_line, body)
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Connection"] == "close"
    assert "Allow" not in headers


def test_a_stalled_client_gets_408_in_text_plain(scene: Scene) -> None:
    with socket.create_connection(("127.0.0.1", scene.port), 30) as stalled:
        stalled.sendall(b"GET /health HT")
        data = b""
        while chunk := stalled.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"Content-Type: text/plain; charset=utf-8\r\n" in data


def test_the_kernel_queues_a_burst_while_the_server_is_busy(scene: Scene) -> None:
    # The server is stopped: only the listen backlog holds the connections. With a backlog
    # of 5 the 7th connect's SYN is dropped (accept queue full) and the connect times out.
    burst = 100
    os.kill(scene.server.pid, signal.SIGSTOP)
    clients: list[socket.socket] = []
    try:
        assert wait_until(lambda: process_state(scene.server.pid) == "T", 10)
        for index in range(burst):
            try:
                clients.append(socket.create_connection(("127.0.0.1", scene.port), 3))
            except OSError as error:
                pytest.fail(
                    f"connect {index + 1} of {burst} failed while the server was busy: {error}"
                )
            clients[-1].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        os.kill(scene.server.pid, signal.SIGCONT)
    answers = []
    for client in clients:
        client.settimeout(30)
        data = b""
        while chunk := client.recv(4096):
            data += chunk
        client.close()
        answers.append(data.split(b"\r\n", 1)[0])
    assert answers == [b"HTTP/1.1 200 OK"] * burst


def test_a_burst_of_concurrent_probes_is_answered(scene: Scene) -> None:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        results = list(
            pool.map(lambda _: http_get(f"{scene.url}/ready", timeout=30)[:2], range(300))
        )
    assert results == [(200, "READY\n")] * 300


def imported_modules(stderr: str) -> set[str]:
    return {
        line.split("|")[2].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


HEAVY_MODULES = {
    "asyncio",
    "ssl",
    "_ssl",
    "http.server",
    "http.client",
    "urllib.request",
    "email",
    "subprocess",
}


def test_the_server_imports_only_what_serving_needs(scene: Scene, tmp_path: Path) -> None:
    port = free_port()
    trace = tmp_path / "imports.txt"
    with open(trace, "wb") as output:
        server = scene.start_server(port, output, python_options=("-X", "importtime"))
        try:
            assert wait_for_status(f"http://127.0.0.1:{port}/ready", 200, 30) == (200, "READY\n")
        finally:
            stop(server)
    modules = imported_modules(trace.read_text())
    assert "entrypoint.health_server" in modules  # the trace is real
    assert modules & HEAVY_MODULES == set()


def test_check_does_not_import_the_server(scene: Scene) -> None:
    env = dict(os.environ, HEALTH_PORT=str(scene.port))
    checker = healthcheck(scene.workspace, "--check", env=env, python_options=("-X", "importtime"))
    output = checker.communicate(timeout=30)[0].decode()
    assert checker.returncode == 0, output
    modules = imported_modules(output)
    assert "entrypoint.healthcheck_cli" in modules
    assert (
        modules & ({"entrypoint.health_server", "entrypoint.squid_serving"} | HEAVY_MODULES)
        == set()
    )


def host_has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_health_answers_on_ipv6_and_ipv4_loopback(scene: Scene) -> None:
    if not host_has_ipv6_loopback():
        pytest.skip("this host has no IPv6 loopback (::1)")
    for host in ("::1", "127.0.0.1"):
        status, headers, body = raw_request(
            scene.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", host=host
        )
        assert (status, body) == ("HTTP/1.1 200 OK", b"OK\n"), host
        assert headers["Content-Type"] == "text/plain; charset=utf-8"


def test_check_warns_about_an_invalid_health_port_and_asks_127_0_0_1_on_the_default(
    scene: Scene,
) -> None:
    env = scene.workspace.env(HEALTH_PORT="abc")
    checker = healthcheck(
        scene.workspace, "--check", env=env, output=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = (stream.decode() for stream in checker.communicate(timeout=30))
    assert (
        stderr
        == "Invalid HEALTH_PORT='abc': expected a TCP port number 1-65535; using default 8080\n"
    )
    assert stdout.startswith("http://127.0.0.1:8080/health: "), stdout
    assert checker.returncode in (0, 1)  # whatever listens on 8080 here, if anything


def test_check_prints_nothing_on_stderr_when_the_settings_are_valid(scene: Scene) -> None:
    env = scene.workspace.env(HEALTH_PORT=str(scene.port))
    checker = healthcheck(
        scene.workspace, "--check", env=env, output=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = (stream.decode() for stream in checker.communicate(timeout=30))
    assert (checker.returncode, stdout, stderr) == (
        0,
        f"http://127.0.0.1:{scene.port}/health: 200 OK\n",
        "",
    )


# -- the health port under attack (issue 21 item 1) ------------------------------------------
ATTACK_PROBES = 100
ATTACK_DRIBBLERS = 64


def test_probes_are_answered_while_thousands_of_idle_and_64_dribbling_clients_hold_connections(
    scene: Scene,
    tmp_path: Path,
) -> None:
    soft, hard = raise_fd_limit()  # the server started below inherits it too
    try:
        idle = max(min(10_000, hard - 1024), 0)
        assert idle >= 1000, (
            f"RLIMIT_NOFILE hard limit {hard} leaves too few descriptors for the attack"
        )
        port = free_port()
        with open(tmp_path / "attacked.log", "wb") as output:
            server = scene.start_server(port, output)
            attack = Attack(port, idle=idle, dribblers=ATTACK_DRIBBLERS)
            try:
                assert wait_for_status(f"http://127.0.0.1:{port}/health", 200, 30)[0] == 200
                before = process_status(server.pid)
                attack.start()
                time.sleep(
                    3.0
                )  # every dribbler has sent its first bytes; the old server's slots are full
                peaks: list[dict[str, int]] = []
                results = run_probes(
                    port,
                    ATTACK_PROBES,
                    interval=0.1,
                    timeout=1.0,
                    give_up_after=ATTACK_PROBES // 100,
                    on_probe=lambda: peaks.append(process_status(server.pid)),
                )
            finally:
                attack.stop()
                stop(server)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    answered = sum(result is not None for result in results)
    assert answered >= ATTACK_PROBES * 99 // 100, (
        f"{answered} of {len(results)} probes answered 200 within 1 s under {idle} idle and"
        f" {ATTACK_DRIBBLERS} dribbling connections (gave up after {len(results)})"
    )
    assert (
        attack.connects >= idle + ATTACK_DRIBBLERS and attack.dribbled >= ATTACK_DRIBBLERS
    )  # the attack was real
    # The event loop and the Squid sampler, whatever the clients do; memory bounded by the connection limit.
    assert max(peak["Threads"] for peak in peaks) <= 2, peaks[-1]
    assert max(peak["VmRSS"] for peak in peaks) - before["VmRSS"] < 16 * 1024, (before, peaks[-1])


def test_a_dribbling_client_is_cut_off_at_the_exchange_deadline(scene: Scene) -> None:
    # One byte every 0.4 s forever: 408 at the head deadline, and the connection is closed at
    # the exchange deadline although the client keeps sending (no drain it can stretch).
    data, cut_off = b"", None
    with socket.create_connection(("127.0.0.1", scene.port), 30) as client:
        client.sendall(b"GET /health HTTP/1.1\r\nX: ")
        started = time.monotonic()
        client.settimeout(0.4)
        while cut_off is None and time.monotonic() - started < EXCHANGE_TIMEOUT + 6:
            try:
                chunk = client.recv(4096)
            except socket.timeout:
                chunk = None
            except OSError:
                cut_off = time.monotonic() - started
                break
            data += chunk or b""
            if chunk == b"":
                time.sleep(0.4)  # our side still open: keep sending, as the attack does
            try:
                client.send(b"x")
            except OSError:
                cut_off = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
    assert cut_off is not None and cut_off < EXCHANGE_TIMEOUT + 1.5, (
        f"still connected after {cut_off or 'the whole test'} s"
    )


def test_a_new_connection_is_never_refused_at_the_limit(scene: Scene) -> None:
    # Twice as many silent connections as the server holds: each new one drops the oldest.
    held = [
        socket.create_connection(("127.0.0.1", scene.port), 5) for _ in range(2 * MAX_CONNECTIONS)
    ]
    try:
        assert probe(scene.port, timeout=1.0) is not None
        time.sleep(0.5)
        dropped = 0
        for conn in held[:MAX_CONNECTIONS]:
            conn.settimeout(0.01)
            try:
                dropped += conn.recv(1) == b""
            except socket.timeout:
                pass
            except ConnectionResetError:
                dropped += 1
        assert dropped >= MAX_CONNECTIONS // 2, (
            f"only {dropped} of the oldest {MAX_CONNECTIONS} were dropped"
        )
    finally:
        for conn in held:
            conn.close()


# -- the request head parser and its log line ------------------------------------------------
DOCUMENTED_STATUSES = {200, 400, 404, 405, 408, 431, 503, 505}


def unit_targets(tmp_path: Path) -> tuple[HealthTargets, SquidWatch]:
    pid_file = tmp_path / "no-squid.pid"
    targets = HealthTargets(
        pid_file, "squid", "127.0.0.1", 3128, (tmp_path,), tmp_path / "squid.conf"
    )
    return targets, SquidWatch(pid_file, "squid", [3128])


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


REQUEST_PIECES = st.sampled_from(
    [
        b"GET",
        b"HEAD",
        b"POST",
        b" ",
        b"\t",
        b"/health",
        b"/ready",
        b"?x",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"HTTP/2",
        b"\r\n",
        b"\n",
        b"\r",
        b"\x1b[31m",
        b"\x85",
        b"\x00",
        b"\xff",
        b"\\",
        b"\xe2\x80\xa8",
        b":",
        b"Host: x",
    ]
)
REQUEST_HEADS = st.one_of(
    st.none(),
    st.binary(max_size=9000),
    st.lists(REQUEST_PIECES, max_size=40).map(b"".join),
    st.tuples(st.lists(REQUEST_PIECES, max_size=12).map(b"".join), st.binary(max_size=64)).map(
        lambda t: t[0] + b"\r\n\r\n" + t[1]
    ),
)


@given(head=REQUEST_HEADS)
def test_any_request_head_gets_a_documented_status_and_a_one_line_printable_log(
    head: bytes | None,
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        targets, watch = unit_targets(Path(tmp))
        records = Records()
        health_log = logging.getLogger("cephaloproxy.health")
        level = health_log.level
        health_log.addHandler(records)
        health_log.setLevel(logging.DEBUG)
        try:
            data = respond(head, targets, watch)
        finally:
            health_log.removeHandler(records)
            health_log.setLevel(level)
    status_line = data.split(b"\r\n", 1)[0].decode("ascii")
    assert int(status_line.split(" ")[1]) in DOCUMENTED_STATUSES, status_line
    for line in records.lines:
        assert all(char.isprintable() for char in line), repr(line)


@pytest.mark.parametrize(
    ("sent", "logged"),
    [
        ("GET /\x1b[2J HTTP/1.1", "GET /\\x1b[2J HTTP/1.1"),
        ("GET /a\rb HTTP/1.1", "GET /a\\rb HTTP/1.1"),
        ("GET /\x85next HTTP/1.1", "GET /\\x85next HTTP/1.1"),
        (
            "GET /\\x1b HTTP/1.1",
            "GET /\\\\x1b HTTP/1.1",
        ),  # an escape sent as text stays distinguishable
        ("GET /caf\xe9 HTTP/1.1", "GET /caf\xe9 HTTP/1.1"),
    ],
    ids=["esc", "cr", "nel", "backslash", "latin-1"],
)
def test_the_logged_request_line_escapes_control_characters(sent: str, logged: str) -> None:
    assert printable(sent) == logged


def test_a_request_line_with_control_characters_reaches_the_log_escaped(scene: Scene) -> None:
    log_file = scene.workspace.var / "health.log"
    # NEL and NBSP are no separators (404); a bare CR is (400): both lines are logged escaped.
    not_found = raw_request(scene.port, b"GET /\x1b[2J\x85\xa0\x9b HTTP/1.1\r\nHost: x\r\n\r\n")[0]
    bad = raw_request(scene.port, b"GET /a\rb\x1b] HTTP/1.1\r\nHost: x\r\n\r\n")[0]
    assert wait_until(lambda: log_file.read_bytes().count(b" -> 40") >= 2, 10), (
        log_file.read_bytes()
    )
    logged = log_file.read_bytes()
    assert not any(byte < 0x20 and byte != 0x0A for byte in logged), logged
    text = logged.decode("utf-8", "replace")
    assert not any(0x7F <= ord(char) <= 0x9F for char in text), logged
    assert b"health GET /\\x1b[2J\\x85\\xa0\\x9b HTTP/1.1 -> 404" in logged, logged
    assert b"health GET /a\\rb\\x1b] HTTP/1.1 -> 400" in logged, logged
    assert (not_found, bad) == ("HTTP/1.1 404 Not Found", "HTTP/1.1 400 Bad Request")


def test_a_squid_frozen_in_state_d_fails_ready_then_health_within_the_bound(scene: Scene) -> None:
    problem = freeze_problem()
    if problem:
        pytest.skip(problem)
    with frozen(scene.sleeper.pid):
        frozen_at = time.monotonic()
        assert process_state(scene.sleeper.pid) == "D"
        status, body = wait_for_status(f"{scene.url}/ready", 503, STALL_READY + 5)
        assert (
            f"- proxy port: squid worker pid {scene.sleeper.pid} made no progress in uninterruptible sleep (D)"
            in body
        )
        status, body = wait_for_status(f"{scene.url}/health", 503, LIVENESS_BOUND + 5)
        assert status == 503, (
            f"/health still {status} {body!r} {time.monotonic() - frozen_at:.1f} s after the freeze"
        )
        assert (
            time.monotonic() - frozen_at <= LIVENESS_BOUND + 1.0
        )  # the contract, plus this test's own polling
    assert http_get(f"{scene.url}/health")[:2] == (200, "OK\n")
