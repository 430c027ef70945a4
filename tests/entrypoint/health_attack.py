"""A hostile load on the health port (idle and dribbling connections, renewed) and kubelet-style probes, for its test and benchmark."""

from __future__ import annotations

import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

PROBE_REQUEST = (
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n\r\n"
)
DRIBBLE_START = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
DRIBBLE_INTERVAL = 0.4


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard one (children inherit it); returns the old limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, hard


def probe(
    port: int, timeout: float = 1.0, host: str = "127.0.0.1", path: str = "/health"
) -> float | None:
    """A kubelet-style probe (new connection, `timeout` for everything): its latency when
    answered 200 within the timeout, else None."""
    request = (
        PROBE_REQUEST
        if path == "/health"
        else PROBE_REQUEST.replace(b" /health ", f" {path} ".encode(), 1)
    )
    started = time.monotonic()
    deadline = started + timeout
    data = b""
    try:
        with socket.create_connection((host, port), timeout) as conn:
            conn.sendall(request)
            while b"\r\n" not in data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                conn.settimeout(remaining)
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    if not data.startswith(b"HTTP/1.1 200 "):
        return None
    elapsed = time.monotonic() - started
    return elapsed if elapsed <= timeout else None


def _registered_socket(key: selectors.SelectorKey) -> socket.socket:
    """The socket a selector key holds: the attack registers only sockets."""
    sock = key.fileobj
    assert isinstance(sock, socket.socket), sock
    return sock


class Attack(threading.Thread):
    """`idle` connections that send nothing and `dribblers` that send a request head one byte
    every DRIBBLE_INTERVAL, all opened at once; each one the server closes is opened again, at
    most `renew_rate` per second. One thread, non-blocking sockets (the connects never wait for
    an accept)."""

    def __init__(
        self,
        port: int,
        idle: int,
        dribblers: int,
        renew_rate: float = 500.0,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(daemon=True)
        self.address = (host, port)
        self.idle = idle
        self.dribblers = dribblers
        self.renew_rate = renew_rate
        self.stopping = threading.Event()
        self.selector = selectors.DefaultSelector()
        self.dribbling: dict[int, tuple[socket.socket, float]] = {}  # fd -> (socket, next byte due)
        self.renewals = {True: 0, False: 0}  # connections to open again: dribblers, idle ones
        self.connects = 0
        self.closed_by_server = 0
        self.dribbled = 0
        self.errors = 0

    def _open(self, dribbler: bool) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if sock.connect_ex(self.address) not in (0, 115):  # EINPROGRESS
            self.errors += 1
            sock.close()
            self.renewals[dribbler] += 1
            return
        self.connects += 1
        self.selector.register(sock, selectors.EVENT_READ, dribbler)
        if dribbler:
            self.dribbling[sock.fileno()] = (sock, 0.0)

    def _closed(self, sock: socket.socket, dribbler: bool) -> None:
        self.selector.unregister(sock)
        self.dribbling.pop(sock.fileno(), None)
        sock.close()
        self.closed_by_server += 1
        self.renewals[dribbler] += 1

    def _dribble(self, now: float) -> None:
        for fd, (sock, due) in list(self.dribbling.items()):
            if due > now:
                continue
            try:
                sock.send(DRIBBLE_START if due == 0.0 else b"x")
            except (BlockingIOError, OSError):
                continue  # not connected yet (or reset: the read side sees that)
            self.dribbled += 1
            self.dribbling[fd] = (sock, now + DRIBBLE_INTERVAL)

    def run(self) -> None:
        for index in range(self.idle + self.dribblers):
            self._open(index >= self.idle)  # the dribblers last: the newest
        allowance, last = 0.0, time.monotonic()
        while not self.stopping.is_set():
            for key, _ in self.selector.select(0.05):
                sock = _registered_socket(key)
                try:
                    sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                self._closed(
                    sock, bool(key.data)
                )  # an answer (408), a close or a reset: the server let go
            now = time.monotonic()
            allowance = min(allowance + (now - last) * self.renew_rate, self.renew_rate)
            last = now
            for dribbler in (True, False):  # dribblers first
                while self.renewals[dribbler] and allowance >= 1:
                    allowance -= 1
                    self.renewals[dribbler] -= 1
                    self._open(dribbler)
            self._dribble(now)
        for key in list(self.selector.get_map().values()):
            _registered_socket(key).close()
        self.selector.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def process_status(pid: int) -> dict[str, int]:
    """Threads, VmRSS (KiB) and CPU time (clock ticks, user + system) of a process, from /proc."""
    status: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("Threads", "VmRSS"):
            status[name] = int(value.split()[0])
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    status["cpu_ticks"] = int(fields[11]) + int(fields[12])
    return status


def run_probes(
    port: int,
    count: int,
    interval: float,
    timeout: float = 1.0,
    give_up_after: int | None = None,
    on_probe: Callable[[], None] | None = None,
    path: str = "/health",
) -> list[float | None]:
    """`count` probes, one every `interval` s; stops early after `give_up_after` unanswered ones."""
    results: list[float | None] = []
    for _ in range(count):
        started = time.monotonic()
        results.append(probe(port, timeout, path=path))
        if on_probe is not None:
            on_probe()
        if give_up_after is not None and results.count(None) > give_up_after:
            break
        time.sleep(max(interval - (time.monotonic() - started), 0.0))
    return results
