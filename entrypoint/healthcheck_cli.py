"""`healthcheck`: `--check` probes /health for Docker's HEALTHCHECK; otherwise serves the endpoints."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Sequence

from entrypoint.health_server import HealthTargets, make_server
from entrypoint.squid_serving import SquidWatch
from entrypoint.logs import configure_logging
from entrypoint.settings import load_settings

CHECK_TIMEOUT = 3.0


def check(port: int) -> int:
    """0 when http://127.0.0.1:PORT/health answers 200, else 1."""
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=CHECK_TIMEOUT) as response:
            body = response.read(200).decode("utf-8", errors="replace").strip()
            print(f"{url}: {response.status} {body}")
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as error:
        print(f"{url}: {error.code} {error.read(200).decode('utf-8', 'replace').strip()}")
    except (OSError, ValueError) as error:
        print(f"{url}: unreachable ({error})")
    return 1


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(port: int, targets: HealthTargets, log_level: str) -> int:
    log = configure_logging(log_level)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    watch = SquidWatch(targets.pid_file, targets.squid_comm, [targets.proxy_port])
    try:
        server = make_server(port, targets, watch)
    except OSError as error:
        log.error("Health server cannot listen on port %d: %s", port, error.strerror or error)
        return 1
    log.info("Health server listening on port %d", port)
    threading.Thread(target=watch.run_sampler, args=(threading.Event(),), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    settings, _ = load_settings(os.environ)
    parser = argparse.ArgumentParser(prog="healthcheck", description=__doc__)
    parser.add_argument("--check", action="store_true", help="query /health and exit 0/1")
    parser.add_argument("--port", type=int, default=settings.health_port)
    parser.add_argument("--pid-file", type=Path, default=settings.run_dir / "squid.pid")
    parser.add_argument("--squid-comm", default=settings.squid_bin.name)
    parser.add_argument("--proxy-host", default="127.0.0.1")
    parser.add_argument("--proxy-port", type=int, default=settings.squid_port)
    parser.add_argument("--cache-dir", type=Path, action="append", default=None)
    parser.add_argument("--config", type=Path, default=settings.config)
    parser.add_argument("--log-level", default=settings.log_level)
    args = parser.parse_args(argv)
    if args.check:
        return check(args.port)
    targets = HealthTargets(
        pid_file=args.pid_file,
        squid_comm=args.squid_comm,
        proxy_host=args.proxy_host,
        proxy_port=args.proxy_port,
        cache_dirs=tuple(args.cache_dir or [settings.spool_dir]),
        config=args.config,
    )
    return serve(args.port, targets, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
