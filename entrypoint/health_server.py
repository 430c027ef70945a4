"""HTTP health endpoints for Kubernetes/Docker probes (`/health`, `/ready`): a minimal text/plain HTTP/1.1 server.

Runs in its own process (started by the entrypoint), so a stuck probe never blocks PID 1, and one
thread per client (at most MAX_CLIENTS at once), so a slow client never blocks the others. It imports
only what answering GET/HEAD on two paths needs: no http.server, email, urllib, ssl or asyncio.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import socket
import threading
import time
from pathlib import Path

from entrypoint.squid_serving import SquidWatch

LISTEN_BACKLOG = 128  # a burst of probes waits in the kernel's queue, not in SYN retries
CLIENT_TIMEOUT = 5.0  # a client that stalls mid-request is dropped after this
MAX_CLIENTS = 64
MAX_REQUEST_HEAD = 8192
ALLOW = "GET, HEAD"

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

log = logging.getLogger("cephaloproxy.health")


@dataclasses.dataclass(frozen=True)
class HealthTargets:
    pid_file: Path
    squid_comm: str
    proxy_host: str
    proxy_port: int
    cache_dirs: tuple[Path, ...]
    config: Path


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: str
    allow: bool = False  # send `Allow: GET, HEAD` (405)


def failed_readiness_checks(targets: HealthTargets, watch: SquidWatch) -> list[str]:
    failures = watch.readiness_problems()
    for cache_dir in targets.cache_dirs:
        if not os.access(cache_dir, os.W_OK | os.X_OK):
            failures.append(f"cache dir: {cache_dir} is not writable")
    try:
        with open(targets.config, "rb") as handle:
            handle.read(1)
    except OSError as error:
        failures.append(f"config: {targets.config} is not readable ({error.strerror})")
    return failures


def answer(method: str, target: str, targets: HealthTargets, watch: SquidWatch) -> Answer:
    """What a request gets: unknown path 404, other method 405, else the check's 200/503."""
    path = target.split("?", 1)[0]
    if path not in ("/health", "/ready"):
        return Answer(404, "Not Found\n")
    if method not in ("GET", "HEAD"):
        return Answer(405, f"Method Not Allowed: use {ALLOW}\n", allow=True)
    if path == "/health":
        reason = watch.liveness_problem()
        return Answer(200, "OK\n") if reason is None else Answer(503, f"NOT OK: {reason}\n")
    failures = failed_readiness_checks(targets, watch)
    if failures:
        return Answer(503, "NOT READY\n" + "".join(f"- {failure}\n" for failure in failures))
    return Answer(200, "READY\n")


def _http_date() -> str:
    # Not time.strftime: %a and %b follow the locale.
    now = time.gmtime()
    return (
        f"{_DAYS[now.tm_wday]}, {now.tm_mday:02d} {_MONTHS[now.tm_mon - 1]} {now.tm_year}"
        f" {now.tm_hour:02d}:{now.tm_min:02d}:{now.tm_sec:02d} GMT"
    )


def render(result: Answer, include_body: bool) -> bytes:
    body = result.body.encode("utf-8")
    head = [
        f"HTTP/1.1 {result.status} {REASONS[result.status]}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        f"Date: {_http_date()}",
    ]
    if result.allow:
        head.append(f"Allow: {ALLOW}")
    data = ("\r\n".join(head) + "\r\n\r\n").encode("ascii")
    return data + body if include_body else data


def read_request_head(conn: socket.socket, deadline: float) -> bytes | None:
    """Bytes up to the blank line that ends the head; None when the client is too slow."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        conn.settimeout(remaining)
        try:
            chunk = conn.recv(4096)
        except socket.timeout:
            return None
        if not chunk:
            break  # the client closed its side: answer what we have
        data += chunk
        if len(data) > MAX_REQUEST_HEAD:
            break
    return data


def respond(conn: socket.socket, targets: HealthTargets, watch: SquidWatch) -> None:
    """Read one request and answer it; every answer is text/plain, then the connection closes."""
    deadline = time.monotonic() + CLIENT_TIMEOUT
    head = read_request_head(conn, deadline)
    method = ""
    if head is None:
        result = Answer(408, "Request Timeout\n")
    elif len(head) > MAX_REQUEST_HEAD:
        result = Answer(431, "Request Header Fields Too Large\n")
    else:
        request_line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            result = Answer(400, "Bad Request\n")
        elif parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
            result = Answer(505, "HTTP Version Not Supported\n")
        else:
            method = parts[0]
            result = answer(method, parts[1], targets, watch)
        log.debug("health %s -> %d", request_line[:200], result.status)
    conn.settimeout(max(deadline - time.monotonic(), 0.5))
    conn.sendall(render(result, include_body=method != "HEAD"))
    # Closing with unread request bytes (a POST body) would reset the connection and could
    # destroy the answer in flight: end our side, then drain until the client closes.
    conn.shutdown(socket.SHUT_WR)
    drained = 0
    while drained < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        drained += len(chunk)


def make_listener(port: int) -> socket.socket:
    """Listen on every address: IPv6 and IPv4 (one dual-stack socket) when the host has IPv6, else IPv4."""
    if socket.has_ipv6:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        except OSError as error:
            if error.errno not in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                raise
        else:
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("::", port))
                sock.listen(LISTEN_BACKLOG)
                return sock
            except OSError as error:
                sock.close()
                if error.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    raise
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class HealthServer:
    """Accepts on `listener` and answers each client in its own thread."""

    def __init__(self, listener: socket.socket, targets: HealthTargets, watch: SquidWatch) -> None:
        self.listener = listener
        self.targets = targets
        self.watch = watch
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def _client(self, conn: socket.socket) -> None:
        try:
            respond(conn, self.targets, self.watch)
        except OSError as error:
            log.debug("health client dropped: %s", error)
        except Exception:  # noqa: BLE001 - one bad answer must not end the server
            log.exception("Health check failed unexpectedly")
        finally:
            conn.close()
            self.slots.release()

    def serve_forever(self) -> None:
        """Until a signal handler raises (SIGTERM); at most MAX_CLIENTS answered at once."""
        while True:
            self.slots.acquire()
            try:
                conn, _ = self.listener.accept()
            except OSError as error:
                self.slots.release()
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    time.sleep(0.1)  # out of descriptors: let clients finish
                continue
            except BaseException:
                self.slots.release()
                raise
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self.listener.close()
