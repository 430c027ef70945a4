"""HTTP health endpoints for Kubernetes/Docker probes (`/health`, `/ready`) and `/metrics`: a minimal HTTP/1.1 server.

Runs in its own process (started by the entrypoint), so a stuck probe never blocks PID 1. One
thread answers every client from a `selectors` event loop: threads and memory are bounded by
construction, and every connection has a fixed deadline no client can stretch. It imports only
what answering GET/HEAD needs: no http.server, email, urllib, ssl or asyncio (/metrics is
parked and answered by entrypoint.metrics_route, which a worker thread fills).
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import os
import resource
import select
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from entrypoint.mounted_files import FileProblem, check_readable
from entrypoint.squid_serving import SquidWatch

if TYPE_CHECKING:  # loaded by healthcheck_cli only when METRICS is on
    from entrypoint.metrics_route import MetricsRoute, Reply

LISTEN_BACKLOG = 1024  # a burst of probes waits in the kernel's queue, not in SYN retries
HEAD_TIMEOUT = 5.0  # the request head must be complete this long after the accept, else 408
CLOSE_TIMEOUT = 1.0  # after the answer: how long the client's own close is awaited at most
EXCHANGE_TIMEOUT = (
    HEAD_TIMEOUT + CLOSE_TIMEOUT
)  # no connection is held longer, whatever the client does
MAX_CONNECTIONS = 256  # held at once; at the limit a new connection drops the oldest one
ACCEPT_BATCH = 32  # accepts per loop turn, so connections accepted just before are read first
FD_RESERVE = 32  # descriptors kept for /proc reads, the log and the listener
MAX_REQUEST_HEAD = 8192
DRAIN_LIMIT = 65536  # bytes read and discarded after the answer (a request body) before closing
ALLOW = "GET, HEAD"
TEXT = "text/plain; charset=utf-8"
# Every socket call on a client says "do not wait" itself: the accepted socket's own mode is
# left alone (one fcntl less per connection).
NO_WAIT = socket.MSG_DONTWAIT

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
    content_type: str = TEXT


def failed_readiness_checks(targets: HealthTargets, watch: SquidWatch) -> list[str]:
    failures = watch.readiness_problems()
    for cache_dir in targets.cache_dirs:
        if not os.access(cache_dir, os.W_OK | os.X_OK):
            failures.append(f"cache dir: {cache_dir} is not writable")
    try:  # never a blocking open: one thread answers every client
        check_readable(targets.config)
    except FileProblem as error:
        failures.append(f"config: {targets.config} is not readable ({error})")
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


_date_line: tuple[int, str] = (-1, "")  # (second, its Date header line): formatted once a second


def _http_date() -> str:
    global _date_line
    second = int(time.time())
    if second != _date_line[0]:
        # Not time.strftime: %a and %b follow the locale.
        now = time.gmtime(second)
        _date_line = (
            second,
            f"{_DAYS[now.tm_wday]}, {now.tm_mday:02d} {_MONTHS[now.tm_mon - 1]} {now.tm_year}"
            f" {now.tm_hour:02d}:{now.tm_min:02d}:{now.tm_sec:02d} GMT",
        )
    return _date_line[1]


def render(result: Answer, include_body: bool) -> bytes:
    body = result.body.encode("utf-8")
    allow = f"Allow: {ALLOW}\r\n" if result.allow else ""
    head = (
        f"HTTP/1.1 {result.status} {REASONS[result.status]}\r\n"
        f"Content-Type: {result.content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n"
        f"Date: {_http_date()}\r\n{allow}\r\n"
    ).encode("ascii")
    return head + body if include_body else head


def printable(text: str) -> str:
    """`text` with every non-printable character and the backslash escaped repr-style (`\\x1b`, `\\x85`,
    `\\u2028`): what a client sent stays on one log line and cannot drive a terminal."""
    return "".join(
        char if char.isprintable() and char != "\\" else ascii(char)[1:-1] for char in text
    )


def request_line_of(head: bytes) -> bytes:
    return head.split(b"\n", 1)[0].rstrip(b"\r")


def parse_request(head: bytes | None) -> tuple[str, str] | Answer:
    """(method, target) of a request head, or the error answer: 408 when the head did not
    arrive in time (None), 431 when too large, 400 when not `METHOD target HTTP/x.y`, 505."""
    if head is None:
        return Answer(408, "Request Timeout\n")
    if len(head) > MAX_REQUEST_HEAD:
        return Answer(431, "Request Header Fields Too Large\n")
    # Split on ASCII whitespace only (bytes.split): NEL or NBSP inside the target is no separator.
    parts = [part.decode("latin-1") for part in request_line_of(head).split()]
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return Answer(400, "Bad Request\n")
    if parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        return Answer(505, "HTTP Version Not Supported\n")
    return parts[0], parts[1]


def respond(head: bytes | None, targets: HealthTargets, watch: SquidWatch) -> bytes:
    """The whole answer (head and body; no body for HEAD) to a request head, None meaning too late."""
    return respond_parsed(head, parse_request(head), targets, watch)


def respond_parsed(
    head: bytes | None, parsed: tuple[str, str] | Answer, targets: HealthTargets, watch: SquidWatch
) -> bytes:
    """respond, the head parsed already."""
    method = ""
    if isinstance(parsed, Answer):
        result = parsed
    else:
        method = parsed[0]
        result = answer(method, parsed[1], targets, watch)
    if head is not None and len(head) <= MAX_REQUEST_HEAD and log.isEnabledFor(logging.DEBUG):
        log.debug(
            "health %s -> %d",
            printable(request_line_of(head)[:200].decode("latin-1")),
            result.status,
        )
    return render(result, include_body=method != "HEAD")


def scrape_method(parsed: tuple[str, str] | Answer) -> str | None:
    """GET or HEAD when the (parsed) request is a scrape of /metrics, else None (other methods take the usual 404/405 path)."""
    if (
        isinstance(parsed, tuple)
        and parsed[0] in ("GET", "HEAD")
        and parsed[1].split("?", 1)[0] == "/metrics"
    ):
        return parsed[0]
    return None


def head_complete(head: bytearray, new: int) -> bool:
    """Whether the blank line that ends a head arrived (looked for in the `new` bytes and the 3 before)."""
    tail = head[-(new + 3) :]
    return b"\r\n\r\n" in tail or b"\n\n" in tail


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


class Connection:
    """One client: the request head read so far, then the answer left to send, and its deadline."""

    __slots__ = ("deadline", "drained", "fd", "head", "out", "sock", "writing")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.head = bytearray()
        self.out = b""
        self.deadline = deadline
        self.drained = 0
        self.writing = False  # polled for EPOLLOUT (the answer did not fit at once), else EPOLLIN


def connection_limit() -> int:
    """MAX_CONNECTIONS, fewer when the descriptor limit would not leave FD_RESERVE for the rest."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, soft - FD_RESERVE))


class HealthServer:
    """Accepts on `listener` and answers every client from one event loop.

    A connection is `reading` (its head must be complete HEAD_TIMEOUT after the accept, else 408)
    and then `closing` (answer sent, our side shut, the client's close awaited CLOSE_TIMEOUT at
    most). Both are kept in arrival order, so deadlines expire from the front. New connections are
    always accepted: at the limit (or out of descriptors) the oldest answered connection is
    dropped, else the oldest still reading, never the new one (a probe is answered at once).
    """

    def __init__(
        self,
        listener: socket.socket,
        targets: HealthTargets,
        watch: SquidWatch,
        metrics: MetricsRoute | None = None,
    ) -> None:
        self.listener = listener
        self.metrics = metrics  # GET /metrics (None: METRICS=off, 404)
        self.targets = targets
        self.watch = watch
        self.limit = connection_limit()
        self.reading: collections.OrderedDict[int, Connection] = collections.OrderedDict()
        self.closing: collections.OrderedDict[int, Connection] = collections.OrderedDict()
        listener.setblocking(False)
        # epoll itself, not selectors: a probe costs the loop fewer calls (no key objects, and a
        # closed client leaves the set with its close, no unregister).
        self.poller = select.epoll()
        self.poller.register(listener.fileno(), select.EPOLLIN)
        self.wakeup_fd = -1
        if metrics is not None:
            self.wakeup_fd = metrics.wakeup.fileno()
            self.poller.register(self.wakeup_fd, select.EPOLLIN)
            metrics.max_parked = max(1, min(metrics.max_parked, self.limit // 2))

    def serve_forever(self) -> None:
        """Until a signal handler raises (SIGTERM)."""
        listener_fd = self.listener.fileno()
        while True:
            for fd, events in self.poller.poll(self._timeout()):
                if fd == listener_fd:
                    self._accept()
                elif fd == self.wakeup_fd:
                    self._reply_parked(self.metrics.finished() if self.metrics else [])
                else:
                    self._ready(fd, events)
            self._expire(time.monotonic())

    def _timeout(self) -> float:
        """Seconds until the first deadline (-1: none, wait for an event)."""
        deadlines = [
            next(iter(held.values())).deadline for held in (self.reading, self.closing) if held
        ]
        parked = self.metrics.next_deadline() if self.metrics is not None else None
        deadlines += [parked] if parked is not None else []
        return max(min(deadlines) - time.monotonic(), 0.0) if deadlines else -1.0

    # -- accepting ---------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    continue  # ECONNABORTED and the like: that client is gone
                if not self._evict():
                    time.sleep(0.05)  # out of descriptors with no client to drop: others hold them
                    return
                continue
            if self._held() >= self.limit:
                self._evict()
            self._admit(conn)

    def _held(self) -> int:
        """Client connections holding a descriptor: reading, closing and parked scrapes."""
        parked = len(self.metrics.parked) if self.metrics is not None else 0
        return len(self.reading) + len(self.closing) + parked

    def _admit(self, conn: socket.socket) -> None:
        client = Connection(conn, time.monotonic() + HEAD_TIMEOUT)
        self.poller.register(client.fd, select.EPOLLIN)
        self.reading[client.fd] = client
        # A probe sends its request right after connecting: it is usually here already, and is
        # answered now rather than one loop turn later.
        self._read(client)

    def _evict(self) -> bool:
        """Drop the oldest answered connection, else the oldest still reading; False when none is held."""
        for held in (self.closing, self.reading):
            if held:
                self._drop(next(iter(held.values())))
                return True
        return False

    def _drop(self, conn: Connection) -> None:
        self.reading.pop(conn.fd, None)
        self.closing.pop(conn.fd, None)
        conn.sock.close()  # which takes it out of the epoll set too (no other descriptor shares it)

    # -- one connection ----------------------------------------------------------------
    def _ready(self, fd: int, events: int) -> None:
        conn = self.reading.get(fd)
        if conn is not None:
            self._read(conn)
            return
        conn = self.closing.get(fd)
        if conn is None:
            return
        if conn.writing:
            self._flush(conn)
        else:
            self._drain(conn)

    def _read(self, conn: Connection) -> None:
        try:
            chunk = conn.sock.recv(MAX_REQUEST_HEAD + 1 - len(conn.head), NO_WAIT)
        except BlockingIOError:
            return
        except OSError as error:
            log.debug("health client dropped: %s", error)
            self._drop(conn)
            return
        conn.head += chunk
        if (
            chunk
            and len(conn.head) <= MAX_REQUEST_HEAD
            and not head_complete(conn.head, len(chunk))
        ):
            return
        self._answer(conn, bytes(conn.head))  # complete, too large, or the client closed its side

    def _answer(self, conn: Connection, head: bytes | None) -> None:
        parsed = parse_request(head)
        method = scrape_method(parsed) if self.metrics is not None else None
        if method is not None:
            self._park(conn, method)
            return
        try:
            conn.out = respond_parsed(head, parsed, self.targets, self.watch)
        except Exception:
            log.exception("Health check failed unexpectedly")
            self._drop(conn)
            return
        del self.reading[conn.fd]
        conn.head = bytearray()
        conn.deadline = time.monotonic() + CLOSE_TIMEOUT
        self.closing[conn.fd] = conn
        self._flush(conn)

    # -- /metrics: parked off the selector until the route's worker has the answer -----------------
    def _park(self, conn: Connection, method: str) -> None:
        assert self.metrics is not None
        del self.reading[conn.fd]
        self.poller.unregister(conn.fd)
        conn.head = bytearray(method.encode("ascii"))  # kept while parked: HEAD gets no body
        reply = self.metrics.park(conn)
        if reply is not None:
            self._reply_parked([(conn, reply)])

    def _reply_parked(self, replies: list[tuple[object, Reply]]) -> None:
        for client, reply in replies:
            assert isinstance(client, Connection)
            answer = Answer(reply.status, reply.body, content_type=reply.content_type)
            client.out = render(answer, include_body=client.head != b"HEAD")
            client.head = bytearray()
            client.deadline = time.monotonic() + CLOSE_TIMEOUT
            client.writing = False
            self.poller.register(client.fd, select.EPOLLIN)
            self.closing[client.fd] = client
            self._flush(client)

    def _flush(self, conn: Connection) -> None:
        """Send what is left of the answer; once all is sent, shut our side and drain."""
        try:
            sent = conn.sock.send(conn.out, NO_WAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._drop(conn)
            return
        conn.out = conn.out[sent:]
        if (
            bool(conn.out) != conn.writing
        ):  # poll for room to write while some is left, else for the close
            conn.writing = bool(conn.out)
            self.poller.modify(conn.fd, select.EPOLLOUT if conn.writing else select.EPOLLIN)
        if conn.out:
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        # What the client still sends (or its close) is read when epoll reports it: level
        # triggered, so bytes already waiting are reported at once.

    def _drain(self, conn: Connection) -> None:
        """Read and discard what the client still sends (closing with unread bytes would reset the
        connection and could destroy the answer in flight) until it closes, at most DRAIN_LIMIT bytes."""
        while True:
            try:
                chunk = conn.sock.recv(4096, NO_WAIT)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            conn.drained += len(chunk)
            if not chunk or conn.drained > DRAIN_LIMIT:
                self._drop(conn)
                return

    def _expire(self, now: float) -> None:
        """408 for heads not complete in time; drop answered connections whose client did not close."""
        if self.metrics is not None:
            self._reply_parked(self.metrics.expired(now))
        while self.reading:
            conn = next(iter(self.reading.values()))
            if conn.deadline > now:
                break
            self._answer(conn, None)
        while self.closing:
            conn = next(iter(self.closing.values()))
            if conn.deadline > now:
                break
            self._drop(conn)

    def close(self) -> None:
        for conn in [*self.reading.values(), *self.closing.values()]:
            self._drop(conn)
        if self.metrics is not None:
            for parked in self.metrics.parked:
                assert isinstance(parked.client, Connection)
                parked.client.sock.close()
            self.metrics.close()
        self.poller.close()
        self.listener.close()
