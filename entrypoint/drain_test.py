"""Drain-aware shutdown end to end: in-flight downloads finish, idle stops at once, the deadline cuts."""

from __future__ import annotations

import fcntl
import select
import signal
import socket
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.entrypoint.testing import (
    PAYLOAD_CHUNK,
    Launcher,
    LocalHttpServer,
    Workspace,
    start_local_http_server,
    start_slow_origin,
    wait_until,
)

IDLE_STOP_BOUND = 1.5


class Download(threading.Thread):
    """GET through the proxy on a raw socket; records how much of the body arrived."""

    def __init__(self, proxy_port: int, origin_port: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.expected = int(seconds * 10) * len(PAYLOAD_CHUNK)
        self.request = (
            f"GET http://127.0.0.1:{origin_port}/{seconds} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{origin_port}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.proxy_port = proxy_port
        self.body = 0
        self.status = b""
        self.ended_at = 0.0
        self.started = threading.Event()
        self.start()

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.proxy_port), 10) as sock:
            sock.settimeout(60)
            sock.sendall(self.request)
            data = b""
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    if b"\r\n\r\n" in data:
                        head, _, rest = data.partition(b"\r\n\r\n")
                        self.status = head.split(b"\r\n", 1)[0]
                        self.body = len(rest)
                        if self.body > 0:
                            self.started.set()
            except OSError:
                pass
        self.ended_at = time.monotonic()

    @property
    def complete(self) -> bool:
        return self.body == self.expected and b" 200 " in self.status


@pytest.fixture
def origin() -> Iterator[LocalHttpServer]:
    server = start_slow_origin()
    try:
        yield server
    finally:
        server.close()


def custom_config(workspace: Workspace, lifetime: str) -> None:
    workspace.write_custom_config(
        f"http_port 127.0.0.1:{workspace.squid_port}\n"
        f"pid_filename {workspace.runtime_dir('run')}/squid.pid\n"
        "http_access allow localhost\nhttp_access deny all\ncache_log /dev/stderr\n"
        "access_log stdio:/dev/stdout\nlogfile_rotate 0\nvisible_hostname drain-test\n"
        f"shutdown_lifetime {lifetime}\npinger_enable off\nnetdb_filename none\n"
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_download_in_flight_at_the_stop_signal_arrives_complete(
    workspace: Workspace, launch: Launcher, origin: LocalHttpServer, signum: int
) -> None:
    run = launch()
    run.wait_ready()
    # 8 s: longer than any fixed few-second drain would allow.
    download = Download(workspace.squid_port, origin.port, 8)
    assert download.started.wait(30)
    run.process.send_signal(signum)
    # Contract bound: SHUTDOWN_TIMEOUT (30 s) plus Squid's finish.
    assert run.wait_exit(45) == 0, run.output
    download.join(30)
    assert download.complete, f"{download.body} of {download.expected} bytes ({download.status!r})"
    assert (
        f"Received signal {signal.Signals(signum).name}, initiating graceful shutdown..."
        in run.stdout
    )
    assert "Draining 1 client connections (up to 30 s)..." in run.stdout
    assert "Drained after" in run.stdout and "Squid stopped (exit code 0)" in run.stdout
    assert run.descendants_left() == []


def test_an_idle_proxy_takes_the_drained_path(workspace: Workspace, launch: Launcher) -> None:
    # The contract bound (docs/operating.md): an idle stop within 1.5 s of SIGTERM, default config. Squid's
    # kids sleep past their stop unless woken: without that it takes 2.0-2.2 s every time. A
    # correct stop takes 1.1-1.3 s, and a loaded CI machine can stretch one now and then: the
    # best of up to three stops must keep the bound.
    took: list[float] = []
    for _ in range(3):
        run = launch()
        run.wait_ready()
        signalled = time.monotonic()
        run.process.send_signal(signal.SIGTERM)
        assert run.wait_exit(45) == 0
        took.append(time.monotonic() - signalled)
        assert "Drained after 0." in run.stdout  # nothing to wait for: not Squid's 30 s lifetime
        assert "Draining" not in run.stdout
        assert "Squid stopped (exit code 0)" in run.stdout and "Shutdown complete" in run.stdout
        if took[-1] <= IDLE_STOP_BOUND:
            break
    assert min(took) <= IDLE_STOP_BOUND, (
        f"idle stops took {', '.join(f'{t:.2f}' for t in took)} s (bound {IDLE_STOP_BOUND} s)"
    )


def test_shutdown_timeout_shorter_than_a_transfer_cuts_it_and_exits_0(
    workspace: Workspace, launch: Launcher, origin: LocalHttpServer
) -> None:
    run = launch(workspace.env(SHUTDOWN_TIMEOUT="2"))
    run.wait_ready()
    download = Download(workspace.squid_port, origin.port, 30)
    assert download.started.wait(30)
    signalled = time.monotonic()
    run.process.send_signal(signal.SIGTERM)
    assert run.wait_exit(30) == 0
    download.join(30)
    assert not download.complete
    # Contract bound: the deadline, then Squid's finish margin (5 s) and a little slack.
    assert download.ended_at - signalled < 2 + 5 + 3, "the transfer outlived SHUTDOWN_TIMEOUT"
    assert "Draining 1 client connections (up to 2 s)..." in run.stdout
    assert "still open after 2 s (SHUTDOWN_TIMEOUT); stopping Squid now" in run.stdout
    assert run.descendants_left() == []


def test_a_custom_shorter_shutdown_lifetime_bounds_the_drain_and_is_logged(
    workspace: Workspace, launch: Launcher, origin: LocalHttpServer
) -> None:
    custom_config(workspace, "1 seconds")
    run = launch()
    run.wait_ready()
    download = Download(workspace.squid_port, origin.port, 30)
    assert download.started.wait(30)
    run.process.send_signal(signal.SIGTERM)
    assert run.wait_exit(30) == 0
    assert "shutdown_lifetime (1 s) is shorter than SHUTDOWN_TIMEOUT (30 s)" in run.stdout
    assert "Draining 1 client connections (up to 1 s)..." in run.stdout
    download.join(30)
    assert not download.complete


def test_a_second_sigterm_kills_at_once(
    workspace: Workspace, launch: Launcher, origin: LocalHttpServer
) -> None:
    # Squid and SHUTDOWN_TIMEOUT would both let the 60 s transfer finish: only the kill is fast.
    custom_config(workspace, "90 seconds")
    run = launch(workspace.env(SHUTDOWN_TIMEOUT="90"))
    run.wait_ready()
    download = Download(workspace.squid_port, origin.port, 60)
    assert download.started.wait(30)
    run.process.send_signal(signal.SIGTERM)
    run.wait_for_output(r"Draining 1 client connections \(up to 90 s\)")
    run.process.send_signal(signal.SIGTERM)
    assert run.wait_exit(20) == 0
    assert "again, killing Squid now" in run.stdout and "Shutdown complete" in run.stdout
    assert run.descendants_left() == []


@pytest.mark.parametrize(("timeout", "rendered"), [("7", "7 seconds"), ("2.5s", "3 seconds")])
def test_the_rendered_default_carries_shutdown_timeout(
    workspace: Workspace, launch: Launcher, timeout: str, rendered: str
) -> None:
    run = launch(workspace.env(SHUTDOWN_TIMEOUT=timeout))
    run.wait_ready()
    text = (workspace.runtime_dir("run") / "squid.conf").read_text()
    lines = [line for line in text.splitlines() if line.startswith("shutdown_lifetime")]
    assert lines == [f"shutdown_lifetime {rendered}"]


# Larger than what the kernel holds between Squid and a client with a small window.
BIG_BODY = 4 << 20
_ORPHAN_STATES = ("04", "09", "0B")  # FIN_WAIT1, LAST_ACK, CLOSING in /proc/net/tcp


def tail_in_kernel(proxy_port: int, client_port: int) -> int:
    """Bytes not yet acknowledged by the client on a proxy-port socket no process holds (inode 0:
    Squid closed it) and not done sending, from /proc/net/tcp{,6} (the reference); 0 if none."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, remote = fields[1].rsplit(":", 1), fields[2].rsplit(":", 1)
            if (
                (int(local[1], 16), int(remote[1], 16)) == (proxy_port, client_port)
                and fields[3] in _ORPHAN_STATES
                and fields[9] == "0"
            ):
                return int(fields[4].split(":")[0], 16)
    return 0


class TailReader(threading.Thread):
    """A big download through the proxy with a small receive window. Once Squid has closed its
    socket with bytes left in the kernel, it stops reading until `go_on`: the tail stays there."""

    def __init__(self, proxy_port: int, origin_port: int) -> None:
        super().__init__(daemon=True)
        self.proxy_port = proxy_port
        self.sock = socket.socket()
        # Before connect: a fixed small window (no autotuning), so the tail waits in Squid's
        # send queue, not in ours.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", proxy_port))
        self.sock.sendall(
            f"GET http://127.0.0.1:{origin_port}/big HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{origin_port}\r\nConnection: close\r\n\r\n".encode()
        )
        self.lock = threading.Lock()  # a read and its count, against `delivered`
        self.received = 0
        self.head = b""
        self.expected: int | None = None  # head plus Content-Length, once the head is in
        self.tail_seen = threading.Event()
        self.go_on = threading.Event()
        self.ended = threading.Event()
        self.start()

    def run(self) -> None:
        client_port = self.sock.getsockname()[1]
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                if not self.tail_seen.is_set() and tail_in_kernel(self.proxy_port, client_port):
                    self.tail_seen.set()
                    self.go_on.wait(60)
                if not select.select([self.sock], [], [], 0.5)[0]:
                    continue
                with self.lock:
                    chunk = self.sock.recv(16384)
                    self.received += len(chunk)
                if not chunk:
                    break
                self._note_head(chunk)
        except OSError:
            pass
        finally:
            self.ended.set()

    def _note_head(self, chunk: bytes) -> None:
        if self.expected is not None:
            return
        self.head += chunk
        if b"\r\n\r\n" in self.head:
            head = self.head.partition(b"\r\n\r\n")[0]
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            self.expected = len(head) + 4 + length

    def delivered(self) -> int:
        """Bytes that reached the client's host: read, or waiting in its receive queue."""
        with self.lock:
            queued = fcntl.ioctl(self.sock, termios.FIONREAD, b"\0\0\0\0")
            return self.received + int.from_bytes(queued, "little")

    def close(self) -> None:
        self.go_on.set()
        self.join(10)
        self.sock.close()


def test_a_response_tail_still_in_the_kernel_reaches_the_client_before_exit(
    workspace: Workspace, launch: Launcher
) -> None:
    """Squid has written a response's last bytes into the kernel and closed its socket; the
    client has not read them yet. PID 1 must not exit (in a container: the network goes with it)
    before the client has them."""
    origin = start_local_http_server("x" * BIG_BODY)
    reader: TailReader | None = None
    try:
        run = launch()
        run.wait_ready()
        reader = TailReader(workspace.squid_port, origin.port)
        assert reader.tail_seen.wait(60), (
            f"Squid never left a tail in the kernel ({reader.received} bytes read)"
        )
        signalled = time.monotonic()
        run.process.send_signal(signal.SIGTERM)
        # The client is not reading: a drain that waits for the tail is still waiting 5 s on
        # (an idle stop takes ~1.2 s).
        exited = wait_until(lambda: run.process.poll() is not None, 5)
        assert not exited, (
            f"PID 1 exited {time.monotonic() - signalled:.1f} s after SIGTERM with"
            f" {reader.delivered()} of {reader.expected} bytes at the client\n{run.stdout}"
        )
        reader.go_on.set()
        assert run.wait_exit(45) == 0, run.output
        assert reader.delivered() == reader.expected, (
            "PID 1 exited before the client had every byte"
        )
        assert reader.ended.wait(30) and reader.received == reader.expected
        assert "Draining 1 client connections (up to 30 s)..." in run.stdout
        assert "1 closed client connection(s) still sending their last bytes" in run.stdout
        assert "Drained after" in run.stdout and "Squid stopped (exit code 0)" in run.stdout
    finally:
        if reader is not None:
            reader.close()
        origin.close()


def test_a_tail_the_client_never_takes_is_cut_at_shutdown_timeout(
    workspace: Workspace, launch: Launcher
) -> None:
    """Waiting for a tail is bounded like any transfer: SHUTDOWN_TIMEOUT, then the stop."""
    origin = start_local_http_server("x" * BIG_BODY)
    reader: TailReader | None = None
    try:
        run = launch(workspace.env(SHUTDOWN_TIMEOUT="2"))
        run.wait_ready()
        reader = TailReader(workspace.squid_port, origin.port)
        assert reader.tail_seen.wait(60), f"no tail in the kernel ({reader.received} bytes read)"
        signalled = time.monotonic()
        run.process.send_signal(signal.SIGTERM)
        assert run.wait_exit(30) == 0, run.output
        # Contract bound: the deadline, then Squid's finish margin (5 s) and a little slack.
        assert time.monotonic() - signalled < 2 + 5 + 3
        assert (
            "1 closed client connection(s) still sending their last bytes after 2 s"
            " (SHUTDOWN_TIMEOUT); stopping Squid now" in run.stdout
        )
        assert "Drained" not in run.stdout
    finally:
        if reader is not None:
            reader.close()
        origin.close()
