"""Free ports, the threaded HTTP/TLS servers and the bounded load generator, on 127.0.0.1.

The load generator normally goes through Squid; here a tiny forward proxy written with
http.server stands in for it (this unit test must run without Squid or containers). It
proves the generator really sends absolute-URI proxy requests and checks every body.
"""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import certs, netutil


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = netutil.free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as sock:
            sock.bind((netutil.LOOPBACK, port))  # would raise if taken
    assert 0 < netutil.free_port() < 65536


def test_server_answers_with_token_and_counts(tmp_path: Path) -> None:
    with netutil.LocalServer() as server:
        result = netutil.http_get(server.host, server.port, "/a/b")
        assert (result.status, result.body) == (200, server.expected_body("/a/b"))
        assert server.token.encode() in result.body
        assert result.headers["Cache-Control"] == "no-store"
        assert server.requests == 1
    assert not netutil.port_accepts(netutil.LOOPBACK, server.port)


def test_tls_server_and_slow_stream(tmp_path: Path) -> None:
    ca = certs.generate_ca(tmp_path / "ca")
    pair = certs.generate_server_cert(ca, tmp_path / "srv", ["localhost", "127.0.0.1"])
    context = netutil.server_tls_context(str(pair.cert), str(pair.key))
    with netutil.LocalServer(tls=context) as server:
        client = http.client.HTTPSConnection(
            "127.0.0.1", server.port, context=netutil.client_tls_context(str(ca.cert)), timeout=10
        )
        client.request("GET", "/slow?seconds=0.3")
        response = client.getresponse()
        assert response.status == 200
        assert len(response.read()) == 3 * 1024
        client.close()


class _ForwardProxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        target = urllib.parse.urlsplit(self.path)
        assert target.scheme == "http", "a proxy request carries an absolute URI"
        upstream = netutil.http_get(target.hostname or "", target.port or 80, target.path)
        self.send_response(upstream.status)
        self.send_header("Content-Length", str(len(upstream.body)))
        self.end_headers()
        self.wfile.write(upstream.body)


@pytest.fixture
def forward_proxy() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer((netutil.LOOPBACK, 0), _ForwardProxy)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_burst_through_a_proxy_counts_every_request(forward_proxy: int) -> None:
    with (
        netutil.LocalServer() as server,
        netutil.StatusPoller(server.host, server.port, "/health") as poller,
    ):
        result = netutil.run_burst(
            netutil.LOOPBACK,
            forward_proxy,
            url_for=lambda i: server.url(f"/r/{i}"),
            expected_body=lambda i: server.expected_body(f"/r/{i}"),
            total=300,
            connections=10,
        )
    assert (result.succeeded, result.error_count) == (300, 0), result.errors
    assert server.requests >= 300
    assert result.requests_per_second > 0
    assert poller.outcomes and poller.failures() == []


def test_burst_reports_wrong_bodies_and_dead_proxy(forward_proxy: int) -> None:
    with netutil.LocalServer() as server:
        wrong = netutil.run_burst(
            netutil.LOOPBACK, forward_proxy, lambda i: server.url(f"/r/{i}"), lambda i: b"not this", total=20,
            connections=4,
        )  # fmt: skip
    assert (wrong.succeeded, wrong.error_count) == (0, 20)
    assert "HTTP 200" in wrong.errors[0]

    dead = netutil.run_burst(
        netutil.LOOPBACK, netutil.free_port(), lambda i: "http://127.0.0.1:9/", lambda i: b"", total=8, connections=2,
        request_timeout=2,
    )  # fmt: skip
    assert (dead.succeeded, dead.error_count) == (0, 8)
    assert "ConnectionRefusedError" in dead.errors[0]


def test_wait_for_status_gives_up_with_the_last_outcome() -> None:
    with pytest.raises(TimeoutError, match="process is gone"):
        netutil.wait_for_status(
            netutil.LOOPBACK, netutil.free_port(), "/ready", timeout=5, still_alive=lambda: False
        )
