"""`healthcheck`: `--check` probes /health for Docker's HEALTHCHECK; otherwise serves the endpoints.

The two halves import apart: `--check` never loads the server, the server never loads a client.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from entrypoint.log_text import escape_controls
from entrypoint.settings import ascii_integer, load_settings, port_number, shown

CHECK_TIMEOUT = 3.0
CHECK_HOST = "127.0.0.1"


def check(port: int) -> int:
    """0 when http://127.0.0.1:PORT/health answers 200, else 1 (one line on stdout says what came back)."""
    url = f"http://{CHECK_HOST}:{port}/health"
    deadline = time.monotonic() + CHECK_TIMEOUT
    try:
        with socket.create_connection((CHECK_HOST, port), CHECK_TIMEOUT) as conn:
            conn.sendall(
                f"GET /health HTTP/1.0\r\nHost: {CHECK_HOST}:{port}\r\n\r\n".encode("ascii")
            )
            data = b""
            while len(data) < 4096:
                conn.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as error:
        print(f"{url}: unreachable ({error})")
        return 1
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        print(f"{url}: not an HTTP answer ({status_line[:80]!r})")
        return 1
    # The body is the server's, but whatever answers on the port prints here: one clean line.
    print(f"{url}: {parts[1]} {escape_controls(body[:200].decode('utf-8', 'replace').strip())}")
    return 0 if parts[1] == "200" else 1


def _port(text: str) -> int:
    """An argparse type: a TCP port in ASCII digits (never int()'s ValueError on 4300+ digits)."""
    port = port_number(text)
    if port is None:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a TCP port number 1-65535")
    return port


def _fd(text: str) -> int:
    descriptor = ascii_integer(text, 9)
    if descriptor is None:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a file descriptor number")
    return descriptor


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _report(ready_fd: int | None, line: str) -> None:
    """Tell the entrypoint (through the pipe it passed) whether we listen: it trusts nothing else."""
    if ready_fd is None:
        return
    try:
        os.write(ready_fd, line.encode("utf-8") + b"\n")
        os.close(ready_fd)
    except OSError:
        pass  # the entrypoint is gone or stopped waiting; serving is still right


def serve(args: argparse.Namespace, cache_dirs: tuple[Path, ...]) -> int:
    import threading

    from entrypoint.health_server import (
        HealthServer,
        HealthTargets,
        failed_readiness_checks,
        make_listener,
    )
    from entrypoint.logs import configure_logging
    from entrypoint.squid_serving import SquidWatch
    from entrypoint.threads import start_daemon_thread

    log = configure_logging(args.log_level)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    targets = HealthTargets(
        pid_file=args.pid_file,
        squid_comm=args.squid_comm,
        proxy_host=args.proxy_host,
        proxy_port=args.proxy_port,
        cache_dirs=cache_dirs,
        config=args.config,
    )
    try:
        listener = make_listener(args.port)
    except OSError as error:
        code = errno.errorcode.get(error.errno or 0, "EUNKNOWN")
        _report(args.ready_fd, f"error {code} {error.strerror or error}")
        log.error("Health server cannot listen on port %d: %s", args.port, error.strerror or error)
        return 1
    watch = SquidWatch(targets.pid_file, targets.squid_comm, [targets.proxy_port])
    metrics = None
    if args.metrics == "on":
        from entrypoint.metrics import Collector, health_families
        from entrypoint.metrics_route import MetricsRoute

        collector = Collector(
            args.manager_host or args.proxy_host,
            None if args.no_manager else args.manager_port or args.proxy_port,
            args.metrics_state,
            args.config_source or args.config,
        )
        metrics = MetricsRoute(
            collector.collect,
            lambda: health_families(failed_readiness_checks(targets, watch), watch),
        )
    server = HealthServer(listener, targets, watch, metrics)
    try:
        start_daemon_thread(watch.run_sampler, "sampler", (threading.Event(),))
    except RuntimeError as error:  # "can't start new thread": the kernel refused it (EAGAIN)
        log.error(
            "Health server cannot start its sampler thread (%s): the container's process limit"
            " (RLIMIT_NPROC / pids.max) is reached: raise it",
            error,
        )
        listener.close()
        return 1
    log.info("Health server listening on port %d", args.port)
    _report(args.ready_fd, f"listening {args.port}")
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    settings, warnings = load_settings(os.environ)
    parser = argparse.ArgumentParser(prog="healthcheck", description=__doc__)
    parser.add_argument("--check", action="store_true", help="query /health and exit 0/1")
    parser.add_argument("--port", type=_port, default=settings.health_port)
    parser.add_argument("--pid-file", type=Path, default=settings.run_dir / "squid.pid")
    parser.add_argument("--squid-comm", default=settings.squid_bin.name)
    parser.add_argument("--proxy-host", default="127.0.0.1")
    parser.add_argument("--proxy-port", type=_port, default=settings.squid_port)
    # Where /metrics reads the cache manager (default: the proxy's address above).
    parser.add_argument("--manager-host", default=None)
    parser.add_argument("--manager-port", type=_port, default=None)
    # No plain http_port (https_port or intercept only): the manager is not asked at all.
    parser.add_argument("--no-manager", action="store_true")
    parser.add_argument("--cache-dir", type=Path, action="append", default=None)
    parser.add_argument("--config", type=Path, default=settings.config)
    parser.add_argument("--log-level", default=settings.log_level)
    parser.add_argument(
        "--metrics", choices=("on", "off"), default="on" if settings.metrics else "off"
    )
    parser.add_argument(
        "--metrics-state", type=Path, default=None, help="PID 1's published figures (JSON)"
    )
    parser.add_argument(
        "--config-source", type=Path, default=None, help="the operator's config file (for messages)"
    )
    parser.add_argument(
        "--ready-fd",
        type=_fd,
        default=None,
        help="pipe to report `listening PORT` or `error CODE ...` on",
    )
    args = parser.parse_args(argv)
    if args.check:
        for warning in warnings:  # the entrypoint logs them for the server; the check is on its own
            print(warning, file=sys.stderr)
        return check(args.port)
    return serve(args, tuple(args.cache_dir or [settings.spool_dir]))


if __name__ == "__main__":
    sys.exit(main())
