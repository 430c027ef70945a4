"""HTTP health endpoints for Kubernetes/Docker probes (`/health`, `/ready`), text/plain.

Runs in its own process (started by the entrypoint), so a stuck probe never blocks PID 1,
and one thread per client, so a slow client never blocks the others.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from entrypoint.squid_serving import SquidWatch

CLIENT_TIMEOUT = 5.0

log = logging.getLogger("cephaloproxy.health")


@dataclasses.dataclass(frozen=True)
class HealthTargets:
    pid_file: Path
    squid_comm: str
    proxy_host: str
    proxy_port: int
    cache_dirs: tuple[Path, ...]
    config: Path


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


class HealthHandler(BaseHTTPRequestHandler):
    server_version = "CephaloProxyHealth"
    sys_version = ""
    timeout = CLIENT_TIMEOUT  # a client that stalls mid-request is dropped
    targets: HealthTargets  # set on the subclass made by `make_server`
    watch: SquidWatch  # likewise

    def _respond(self, include_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            reason = self.watch.liveness_problem()
            status, body = (200, "OK\n") if reason is None else (503, f"NOT OK: {reason}\n")
        elif path == "/ready":
            failures = failed_readiness_checks(self.targets, self.watch)
            if failures:
                status, body = 503, "NOT READY\n" + "".join(f"- {f}\n" for f in failures)
            else:
                status, body = 200, "READY\n"
        else:
            status, body = 404, "Not Found\n"
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if include_body:
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._respond(include_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._respond(include_body=False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("health %s - %s", self.address_string(), format % args)


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # One socket for IPv4 and IPv6 probes.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _HealthServerIPv6(HealthServer):
    address_family = socket.AF_INET6


def make_server(port: int, targets: HealthTargets, watch: SquidWatch) -> HealthServer:
    """Listen on every address, IPv6 and IPv4 when the host has IPv6, else IPv4 only."""
    handler = type("BoundHealthHandler", (HealthHandler,), {"targets": targets, "watch": watch})
    if socket.has_ipv6:
        try:
            return _HealthServerIPv6(("::", port), handler)
        except OSError as error:
            if error.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
    return HealthServer(("0.0.0.0", port), handler)
