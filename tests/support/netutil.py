"""Local network helpers: free ports, threaded HTTP/TLS servers, proxy clients, a bounded load generator.

Servers bind to one explicit address (127.0.0.1 in unit tests; the container bridge's
gateway address in the acceptance suite) and never to 0.0.0.0, so nothing is exposed
beyond this machine.
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from types import TracebackType

LOOPBACK = "127.0.0.1"
# Linux IP_FREEBIND (not exported by Python's socket module before 3.12 everywhere):
# lets a server bind the bridge gateway address before the runtime has brought the
# bridge up, and keeps working when the bridge is torn down and recreated between tests.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on `host` a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct free ports; all held open together so they cannot repeat."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# Servers -----------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """`/slow?seconds=N`: streams 1 KiB every 0.1 s for N seconds; any other path: a token line."""

    protocol_version = "HTTP/1.1"  # keep-alive, so a burst can reuse connections
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # the suite asserts on responses, not on server chatter

    def do_GET(self) -> None:
        self.server.count_request()
        parsed = urllib.parse.urlsplit(self.path)
        if parsed.path == "/slow":
            self._stream_slowly(urllib.parse.parse_qs(parsed.query))
            return
        body = self.server.body_for(parsed.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream_slowly(self, query: dict[str, list[str]]) -> None:
        seconds = float(query.get("seconds", ["30"])[0])
        chunks = max(1, round(seconds / 0.1))
        chunk = b"x" * 1024
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(chunks * len(chunk)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            for _ in range(chunks):
                if self.server.stopping.is_set():
                    return
                self.wfile.write(chunk)
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            return  # the proxy went away mid-download: expected in the stop test


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], token: str, tls: ssl.SSLContext | None, freebind: bool
    ) -> None:
        self.token = token
        self.tls = tls
        self.freebind = freebind
        self.requests = 0
        self.handler_errors: list[str] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.freebind:
            self.socket.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        super().server_bind()

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: tuple[str, int]
    ) -> None:
        # TLS handshake here, in the per-connection thread, so one stalled client
        # cannot block accept() for the others.
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        # BaseServer's signature also admits UDP's (data, socket); a TCP server gets sockets.
        assert isinstance(request, socket.socket), request
        request.settimeout(30)
        tls_request = self.tls.wrap_socket(request, server_side=True)  # detaches `request`
        try:
            super().finish_request(tls_request, client_address)
        finally:
            tls_request.close()

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        import sys

        with self._lock:
            self.handler_errors.append(f"{client_address}: {sys.exc_info()[1]!r}")

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def body_for(self, path: str) -> bytes:
        return f"{self.token} {path}\n".encode()


class LocalServer:
    """An HTTP (or, with a TLS context, HTTPS) server in a background thread.

    Every response body is `<token> <path>\\n` so a client can prove the answer came
    from this very server and for this very request.
    """

    def __init__(
        self,
        host: str = LOOPBACK,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        freebind: bool = False,
    ) -> None:
        self.token = "cephaloproxy-test-" + secrets.token_hex(8)
        self._server = _Server((host, port), self.token, tls, freebind)
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"server-{self.port}", daemon=True
        )

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def requests(self) -> int:
        return self._server.requests

    @property
    def handler_errors(self) -> list[str]:
        return list(self._server.handler_errors)

    def expected_body(self, path: str) -> bytes:
        return self._server.body_for(path)

    def url(self, path: str = "/", host: str | None = None) -> str:
        scheme = "https" if self._server.tls is not None else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"


def server_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


# Clients -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HttpResult:
    status: int
    body: bytes
    headers: dict[str, str]


def http_get(host: str, port: int, path: str, timeout: float = 10.0) -> HttpResult:
    """A direct GET (http.client, so *_proxy environment variables are never applied)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return HttpResult(response.status, response.read(), dict(response.getheaders()))
    finally:
        connection.close()


def proxy_get(proxy_host: str, proxy_port: int, url: str, timeout: float = 30.0) -> HttpResult:
    """GET an absolute http:// URL through an HTTP forward proxy."""
    connection = http.client.HTTPConnection(proxy_host, proxy_port, timeout=timeout)
    try:
        connection.request("GET", url)
        response = connection.getresponse()
        return HttpResult(response.status, response.read(), dict(response.getheaders()))
    finally:
        connection.close()


@dataclasses.dataclass(frozen=True)
class TunnelResult:
    status: int
    body: bytes
    peer_certificate: dict[str, object]


def client_tls_context(ca_file: str) -> ssl.SSLContext:
    """Trust only `ca_file`, verify the certificate and the host name."""
    context = ssl.create_default_context(cafile=ca_file)
    # Python 3.13 sets VERIFY_X509_STRICT by default; Squid's generated (mimicked)
    # certificates are not required to satisfy every RFC 5280 strictness rule. The test
    # is about the chain of trust to our CA, which stays fully verified.
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    return context


def tls_get_via_connect(
    proxy_host: str,
    proxy_port: int,
    target_host: str,
    target_port: int,
    path: str,
    context: ssl.SSLContext,
    timeout: float = 30.0,
) -> TunnelResult:
    """CONNECT through the proxy, then TLS (SNI + host name check = target_host) and GET `path`."""
    connection = http.client.HTTPSConnection(
        proxy_host, proxy_port, timeout=timeout, context=context
    )
    try:
        connection.set_tunnel(target_host, target_port)
        connection.request("GET", path, headers={"Host": f"{target_host}:{target_port}"})
        response = connection.getresponse()
        body = response.read()
        assert isinstance(connection.sock, ssl.SSLSocket)
        certificate = connection.sock.getpeercert() or {}
        return TunnelResult(response.status, body, dict(certificate))
    finally:
        connection.close()


def name_field(certificate_name: object, field: str = "commonName") -> str | None:
    """A field from getpeercert()'s ((('commonName', 'x'),), ...) name structure."""
    if not isinstance(certificate_name, tuple):
        return None
    for rdn in certificate_name:
        for key, value in rdn:
            if key == field:
                return str(value)
    return None


def wait_for_status(
    host: str,
    port: int,
    path: str,
    status: int = 200,
    timeout: float = 60.0,
    still_alive: Callable[[], bool] = lambda: True,
) -> float:
    """Poll until GET `path` answers `status`; returns seconds waited. Raises TimeoutError with the last outcome."""
    start = time.monotonic()
    last = "no attempt"
    while time.monotonic() - start < timeout:
        try:
            result = http_get(host, port, path, timeout=2.0)
            if result.status == status:
                return time.monotonic() - start
            last = f"HTTP {result.status}: {result.body[:200]!r}"
        except OSError as error:
            last = repr(error)
        except http.client.HTTPException as error:
            last = repr(error)
        if not still_alive():
            raise TimeoutError(
                f"gave up waiting for {path} on {host}:{port}: the process is gone (last: {last})"
            )
        time.sleep(0.2)
    raise TimeoutError(
        f"{path} on {host}:{port} did not answer {status} within {timeout:.0f} s (last: {last})"
    )


# Load --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BurstResult:
    requested: int
    succeeded: int
    errors: tuple[str, ...]  # first few failures, for the assertion message
    error_count: int
    elapsed_s: float

    @property
    def requests_per_second(self) -> float:
        return self.succeeded / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_burst(
    proxy_host: str,
    proxy_port: int,
    url_for: Callable[[int], str],
    expected_body: Callable[[int], bytes],
    total: int = 2000,
    connections: int = 20,
    request_timeout: float = 30.0,
    deadline_s: float = 300.0,
) -> BurstResult:
    """Send `total` GETs over `connections` keep-alive connections through the proxy.

    Bounded: a fixed number of requests, a per-request timeout and an overall deadline
    after which workers stop (unsent requests count as errors).
    """
    lock = threading.Lock()
    succeeded = 0
    error_count = 0
    errors: list[str] = []
    stop_at = time.monotonic() + deadline_s

    def record_error(message: str) -> None:
        nonlocal error_count
        with lock:
            error_count += 1
            if len(errors) < 10:
                errors.append(message)

    def worker(offset: int) -> None:
        nonlocal succeeded
        connection = http.client.HTTPConnection(proxy_host, proxy_port, timeout=request_timeout)
        try:
            for index in range(offset, total, connections):
                if time.monotonic() > stop_at:
                    record_error(
                        f"request {index}: not sent, overall deadline of {deadline_s:.0f} s passed"
                    )
                    continue
                try:
                    connection.request("GET", url_for(index))
                    response = connection.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as error:
                    record_error(f"request {index}: {error!r}")
                    connection.close()  # http.client reconnects on the next request
                    continue
                if response.status != 200 or body != expected_body(index):
                    record_error(f"request {index}: HTTP {response.status} body {body[:120]!r}")
                    continue
                with lock:
                    succeeded += 1
        finally:
            connection.close()

    started = time.monotonic()
    threads = [
        threading.Thread(target=worker, args=(offset,), daemon=True)
        for offset in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, stop_at - time.monotonic() + request_timeout))
    elapsed = time.monotonic() - started
    unfinished = sum(thread.is_alive() for thread in threads)
    if unfinished:
        record_error(f"{unfinished} worker(s) still running after the deadline")
    return BurstResult(total, succeeded, tuple(errors), error_count, elapsed)


class StatusPoller:
    """Polls GET host:port/path in a thread until stopped; records every status or error."""

    def __init__(self, host: str, port: int, path: str, interval_s: float = 0.2) -> None:
        self.host, self.port, self.path, self.interval_s = host, port, path, interval_s
        self.outcomes: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"poll-{path}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.outcomes.append(
                    str(http_get(self.host, self.port, self.path, timeout=5.0).status)
                )
            except (OSError, http.client.HTTPException) as error:
                self.outcomes.append(repr(error))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> StatusPoller:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def failures(self, ok: str = "200") -> list[str]:
        return [outcome for outcome in self.outcomes if outcome != ok]
