"""The Squid that squid/ tests run, found through CEPHALOPROXY_SQUID_ROOT.

The seam (see BRIEF / //tools/squid:defs.bzl): a directory laid out like the
image root. Unset or "/" means the system's Squid (Debian's squid-openssl has
the same paths); a relative value is a runfiles path. This module also starts
a real Squid on a loopback port for a test and stops it again.
"""

from __future__ import annotations

import errno
import http.server
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import socketserver
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# The seam itself (which Squid, where its files are) is shared with the
# entrypoint tests; re-exported so the squid/ tests import from one place.
from tools.squid.squid_under_test import (  # noqa: F401
    SquidLayout,
    SquidNotFound,
    resolve_root,
    resolve_runfile,
    squid_under_test,
)

# Not resolve(): under Bazel this file is a runfiles symlink, and data files
# (version.bzl, entrypoint/squid.conf.default) sit beside it in the runfiles.
REPO_ROOT = Path(__file__).absolute().parent.parent


def expected_version() -> str:
    """The release //squid pins, read from squid/version.bzl (its one home)."""
    text = (REPO_ROOT / "squid" / "version.bzl").read_text()
    match = re.search(r'^SQUID_VERSION = "([^"]+)"', text, re.MULTILINE)
    if not match:
        raise AssertionError("squid/version.bzl has no SQUID_VERSION line")
    return match.group(1)


# `uname -m` -> the image's architecture names (CEPHALOPROXY_SQUID_ARCH, //squid's variants).
_MACHINE_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
# The GNU triplet a cross build passes as --host (//tools/cc).
ARCH_TRIPLET = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}


def host_arch() -> str:
    return _MACHINE_ARCH.get(platform.machine(), platform.machine())


def expected_arch() -> str:
    """The architecture the Squid under test was built for (set per variant by squid/BUILD.bazel)."""
    return os.environ.get("CEPHALOPROXY_SQUID_ARCH", "") or host_arch()


def runnable_squid() -> SquidLayout:
    """The Squid under test, skipping (or failing, under CEPHALOPROXY_REQUIRE_EMULATION=1) when the
    kernel cannot run its binaries: another architecture's Squid needs qemu-user-static
    registered with binfmt_misc (README "Platforms")."""
    layout = squid_under_test()
    try:
        subprocess.run([str(layout.squid), "-v"], capture_output=True, timeout=120, check=False)
    except OSError as error:
        if error.errno != errno.ENOEXEC:
            raise
        problem = (
            f"{layout.squid} is a linux/{expected_arch()} program and this {host_arch()} kernel cannot run it"
            ' (Exec format error): register qemu-user-static with binfmt_misc (README "Platforms")'
        )
        if os.environ.get("CEPHALOPROXY_REQUIRE_EMULATION") == "1":
            pytest.fail(problem + "; CEPHALOPROXY_REQUIRE_EMULATION=1 requires it")
        pytest.skip(problem)
    return layout


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def runtime_directives(state_dir: Path) -> str:
    """Common lines: state in state_dir, loopback-only DNS, fast shutdown.

    As root (the Debian build environment, CI), Squid refuses to keep root
    and switches to cache_effective_user, so that user must exist and be able
    to write state_dir.
    """
    lines = [
        f"pid_filename {state_dir}/squid.pid",
        f"cache_log {state_dir}/cache.log",
        f"access_log stdio:{state_dir}/access.log",
        "cache_store_log none",
        f"coredump_dir {state_dir}",
        "netdb_filename none",
        "pinger_enable off",
        "visible_hostname cephaloproxy-test",
        # Never ask a real DNS server; tests use literal 127.0.0.1 URLs.
        "dns_nameservers 127.0.0.1",
        "shutdown_lifetime 1 seconds",
    ]
    state_dir.chmod(0o777 if os.geteuid() == 0 else 0o700)
    return "\n".join(lines) + "\n" + privilege_directives()


def privilege_directives() -> str:
    """As root, the user Squid switches to; nothing otherwise.

    Squid refuses to keep root and switches to cache_effective_user, whose
    compiled-in default ("squid" for //squid, "proxy" for Debian) need not
    exist where the tests run (the image has it; the build chroot does not).
    """
    if os.geteuid() != 0:
        return ""
    return f"cache_effective_user {pwd.getpwnam('nobody').pw_name}\n"


@contextmanager
def state_directory() -> Iterator[Path]:
    """A fresh directory for Squid's pid, logs and databases, removed afterwards.

    Under /tmp rather than pytest's tmp_path: as root, Squid drops to
    "nobody", which cannot traverse pytest's 0700 base directories.
    """
    path = Path(tempfile.mkdtemp(prefix="squid-test-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_for_port(
    port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"squid exited with {process.returncode} before listening:\n{read_log(log)}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(
        f"squid did not listen on 127.0.0.1:{port} within {timeout} s:\n{read_log(log)}"
    )


def read_log(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-4000:]
    except OSError:
        return f"(no {log})"


class RunningSquid:
    """A Squid started in the foreground (-N) for one test."""

    def __init__(self, layout: SquidLayout, config: Path, state_dir: Path, port: int) -> None:
        self.layout = layout
        self.config = config
        self.state_dir = state_dir
        self.port = port
        self.log = state_dir / "cache.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "RunningSquid":
        self.process = subprocess.Popen(
            # A unique service name (-n) gives this Squid its own shared-memory
            # segment names in /dev/shm, so concurrent or leftover Squids
            # (other tests, a crashed run) cannot collide with it.
            [
                str(self.layout.squid),
                "-N",
                "-n",
                f"sqt{os.getpid()}p{self.port}",
                "-f",
                str(self.config),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.process, self.log)
        return self

    def __exit__(self, *_: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"squid ignored SIGTERM for 30 s:\n{read_log(self.log)}")


@contextmanager
def serving(server: socketserver.TCPServer) -> Iterator[int]:
    """Runs a local origin server in a daemon thread; yields its port, then stops it."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


class StaticBodyHandler(http.server.BaseHTTPRequestHandler):
    """A local origin that answers every GET with `body` (set it on a subclass)."""

    body = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_: object) -> None:
        pass
