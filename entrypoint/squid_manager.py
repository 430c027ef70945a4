"""Squid's cache manager over loopback: `GET /squid-internal-mgr/<report>` on the proxy port, bounded in time and size.

Squid 7 has no cachemgr.cgi, squidclient or `cache_object://`: the manager answers plain HTTP on
the proxy's own http_port (allowed by `http_access allow localhost manager`). Blocking sockets
with a deadline: this runs in the metrics worker thread, never on the health server's loop.
"""

from __future__ import annotations

import socket
import time

MAX_ANSWER = 1 << 20  # bytes; the biggest report read here is ~7 KiB
REPORTS = ("counters", "info", "service_times")


class ManagerError(Exception):
    """The manager did not give the report; `denied` when Squid answered 403 (http_access)."""

    def __init__(self, message: str, denied: bool = False, password: bool = False) -> None:
        super().__init__(message)
        self.denied = denied
        self.password = password  # 401: a cachemgr_passwd line asks a password, not http_access


def loopback_host(host: str) -> str:
    """Where to connect for an http_port bound to `host`: its own address, loopback for a wildcard."""
    if host in ("", "0.0.0.0", "*"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host.strip("[]")


def fetch(host: str, port: int, report: str, deadline: float) -> tuple[str, str]:
    """(report body, Server header) of one report; ManagerError when refused, denied, late or not a report."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ManagerError("no time left for the cache manager")
    address = loopback_host(host)
    try:
        with socket.create_connection((address, port), timeout=remaining) as conn:
            host_header = f"[{address}]" if ":" in address else address
            conn.sendall(
                f"GET /squid-internal-mgr/{report} HTTP/1.0\r\nHost: {host_header}:{port}\r\n"
                "User-Agent: cephaloproxy-metrics\r\nConnection: close\r\n\r\n".encode("ascii")
            )
            data = _read_all(conn, deadline)
    except TimeoutError:
        raise ManagerError(
            f"no answer from the cache manager on {address}:{port} in time"
        ) from None
    except OSError as error:
        raise ManagerError(
            f"cannot reach the cache manager on {address}:{port}: {error.strerror or error}"
        ) from None
    return _body(data, report)


def _read_all(conn: socket.socket, deadline: float) -> bytes:
    data = bytearray()
    while len(data) <= MAX_ANSWER:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError()
        conn.settimeout(remaining)
        chunk = conn.recv(65536)
        if not chunk:
            return bytes(data)
        data += chunk
    raise ManagerError(f"the cache manager's answer exceeds {MAX_ANSWER} bytes")


def _body(data: bytes, report: str) -> tuple[str, str]:
    head, separator, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if not separator or len(status_line) < 2 or not status_line[0].startswith(b"HTTP/"):
        raise ManagerError(f"the cache manager's answer to {report} is not HTTP")
    status = status_line[1].decode("ascii", "replace")
    if status in ("401", "403", "407"):
        raise ManagerError(
            f"the cache manager refused {report} (HTTP {status})",
            denied=True,
            password=status == "401",
        )
    if status != "200":
        raise ManagerError(f"the cache manager answered {report} with HTTP {status[:3]}")
    server = ""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"server":
            server = value.strip().decode("ascii", "replace")
    return body.decode("utf-8", "replace"), server
