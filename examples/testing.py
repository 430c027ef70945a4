"""Run the example configs with the Squid under test, outside a container.

The examples are written for the image's layout (/etc/squid/..., /var/lib/squid,
helpers in /usr/lib/squid). `ImageTree` recreates that layout in a temporary
directory and `relocate` rewrites a config's absolute image paths into it, so
the very same file parses and runs with the host's Squid (or //squid:rootfs)
without root-owned paths. Also: small origins (a cacheable one, a recording
parent proxy) and a proxy client that can send headers.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tools.squid.squid_under_test import SquidLayout

EXAMPLES_DIR = Path(__file__).absolute().parent
EXAMPLES = ("domain-filtering", "ssl-bump", "basic-auth", "disk-cache", "parent-proxy")
# The Kubernetes base's own config (deploy/kubernetes/base), checked like an example.
BASE_CONFIG = EXAMPLES_DIR.parent / "deploy" / "kubernetes" / "base" / "squid.conf"

# Image directories the examples refer to, relative to the image root.
IMAGE_DIRS = (
    "etc/squid/conf.d",
    "etc/squid/ssl_cert",
    "etc/squid/auth",
    "var/run/squid",
    "var/log/squid",
    "var/lib/squid",
    "var/spool/squid",
    "var/cache/squid",
)
# Written by Squid (as "nobody" when the tests run as root), so world-writable.
_WRITABLE = (
    "var/run/squid",
    "var/log/squid",
    "var/lib/squid",
    "var/spool/squid",
    "var/cache/squid",
)


def example_config(name: str) -> Path:
    return EXAMPLES_DIR / name / "squid.conf"


def example_conf_d(name: str) -> Path:
    return EXAMPLES_DIR / name / "conf.d"


def list_entries(path: Path) -> list[str]:
    """Non-comment lines of a Squid ACL list file."""
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


@dataclass
class ImageTree:
    """A temporary directory laid out like the parts of the image root the examples use."""

    root: Path

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    def install_conf_d(self, example: str) -> None:
        source = example_conf_d(example)
        if source.is_dir():
            for item in source.iterdir():
                target = self.path("/etc/squid/conf.d") / item.name
                shutil.copyfile(item, target)
                target.chmod(0o644)

    def write(self, image_path: str, text: str, mode: int = 0o644) -> Path:
        target = self.path(image_path)
        target.write_text(text, encoding="utf-8")
        target.chmod(mode)
        return target


@contextmanager
def image_tree() -> Iterator[ImageTree]:
    """Under /tmp, not pytest's 0700 tmp_path: as root Squid drops to "nobody", who must traverse it."""
    root = Path(tempfile.mkdtemp(prefix="cephaloproxy-example-", dir="/tmp"))
    try:
        for relative in IMAGE_DIRS:
            (root / relative).mkdir(parents=True, exist_ok=True)
        for directory in [root, *root.rglob("*")]:
            directory.chmod(0o755)
        for relative in _WRITABLE:
            (root / relative).chmod(0o777)
        yield ImageTree(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


_IMAGE_PREFIXES = (
    "/etc/squid/",
    "/var/run/squid",
    "/var/log/squid",
    "/var/lib/squid",
    "/var/spool/squid",
    "/var/cache/squid",
)


def relocate(text: str, tree: ImageTree, layout: SquidLayout) -> str:
    """The config with image paths pointing into `tree`, helpers into the Squid under test."""
    pattern = re.compile(r"(?<![\w/.])(" + "|".join(re.escape(p) for p in _IMAGE_PREFIXES) + r")")
    text = pattern.sub(lambda match: str(tree.root) + match.group(1), text)
    return re.sub(r"(?<![\w/.])/usr/lib/squid/", str(layout.helpers_dir) + "/", text)


def listen_on(text: str, port: int) -> str:
    """Every `http_port 3128 ...` becomes `http_port 127.0.0.1:<port> ...` (options kept)."""
    result, count = re.subn(
        r"^http_port\s+3128\b", f"http_port 127.0.0.1:{port}", text, flags=re.MULTILINE
    )
    if count == 0:
        raise AssertionError("the example has no `http_port 3128` line")
    return result


def privilege_directives() -> str:
    """As root, Squid switches to cache_effective_user, whose compiled-in default need not exist here."""
    if os.geteuid() != 0:
        return ""
    return f"cache_effective_user {pwd.getpwnam('nobody').pw_name}\n"


def test_directives(layout: SquidLayout, extra: str = "") -> str:
    """Appended after the example (later lines win): where this Squid's data files are, and privileges."""
    return (
        "\n# --- added by the test ---\n"
        + layout.data_directives()
        + privilege_directives()
        + extra
    )


def parse(layout: SquidLayout, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(layout.squid), "-k", "parse", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def chown_to_squid_user(path: Path) -> None:
    """As root, Squid's helpers run as "nobody": hand them what they must write."""
    if os.geteuid() != 0:
        return
    nobody = pwd.getpwnam("nobody")
    for directory, _, files in os.walk(path):
        os.chown(directory, nobody.pw_uid, nobody.pw_gid)
        for name in files:
            os.chown(os.path.join(directory, name), nobody.pw_uid, nobody.pw_gid)


def create_cert_db(layout: SquidLayout, db: Path) -> None:
    """What the entrypoint does for sslcrtd_program -s: initialise the certificate DB."""
    subprocess.run(
        [str(layout.certgen), "-c", "-s", str(db), "-M", "16MB"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    chown_to_squid_user(db)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HostSquid:
    """The Squid under test in the foreground (-N) with an example config; stdout/stderr to files."""

    def __init__(self, layout: SquidLayout, config: Path, tree: ImageTree, port: int) -> None:
        self.layout = layout
        self.config = config
        self.port = port
        self.stdout = tree.root / "squid.stdout"
        self.stderr = tree.root / "squid.stderr"
        self.process: subprocess.Popen[bytes] | None = None

    def initialise_cache(self) -> None:
        """`squid -z`, as the entrypoint does for a disk cache_dir that is not initialised."""
        done = subprocess.run(
            [
                str(self.layout.squid),
                "-z",
                "-N",
                "-n",
                self._service_name(),
                "-f",
                str(self.config),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"squid -z failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )

    def _service_name(self) -> str:
        # Own shared-memory names in /dev/shm: no collision with other Squids.
        return f"cpx{os.getpid()}p{self.port}"

    def __enter__(self) -> "HostSquid":
        for log in (self.stdout, self.stderr):
            log.touch()
            log.chmod(0o666)  # Squid reopens /dev/stdout after dropping to "nobody"
        with open(self.stdout, "ab") as out, open(self.stderr, "ab") as err:
            self.process = subprocess.Popen(
                [str(self.layout.squid), "-N", "-n", self._service_name(), "-f", str(self.config)],
                stdout=out,
                stderr=err,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"squid exited with {self.process.returncode}:\n{self.logs()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise AssertionError(
            f"squid did not listen on 127.0.0.1:{self.port} within 30 s:\n{self.logs()}"
        )

    def __exit__(self, *_: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # SIGINT: Squid exits at once instead of waiting shutdown_lifetime.
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def access_log(self) -> str:
        return self.stdout.read_text(errors="replace")

    def logs(self) -> str:
        return f"--- stdout ---\n{self.access_log()[-3000:]}\n--- stderr ---\n{self.stderr.read_text(errors='replace')[-4000:]}"

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> str:
        """Squid writes the access log line after the response; wait for it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.access_log()
            if needle in text or time.monotonic() > deadline:
                return text
            time.sleep(0.1)


# Clients ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str]


def proxy_request(
    proxy_host: str,
    proxy_port: int,
    url: str,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Response:
    """GET an absolute http:// URL through a forward proxy, with extra request headers."""
    connection = http.client.HTTPConnection(proxy_host, proxy_port, timeout=timeout)
    try:
        connection.request("GET", url, headers=dict(headers or {}))
        response = connection.getresponse()
        return Response(
            response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
        )
    finally:
        connection.close()


def basic_credentials(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Proxy-Authorization": f"Basic {token}"}


def htpasswd_line(user: str, password: str) -> str:
    """An MD5-crypt ($apr1$) htpasswd entry made by the openssl CLI, as the basic-auth example suggests."""
    done = subprocess.run(
        ["openssl", "passwd", "-apr1", "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return f"{user}:{done.stdout.strip()}\n"


# Servers ------------------------------------------------------------------------------


@dataclass
class Recorder:
    """What a test server saw: request lines and headers, thread-safe."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, target: str, headers: dict[str, str]) -> None:
        with self.lock:
            self.requests.append((method, target, headers))

    def targets(self) -> list[str]:
        with self.lock:
            return [target for _, target, _ in self.requests]


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with `<label> <target>`; cacheable for an hour when the server says so."""

    protocol_version = "HTTP/1.1"
    server: "RecordingServer"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.server.recorder.add(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}
        )
        body = f"{self.server.label} {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header(
            "Cache-Control", "public, max-age=3600" if self.server.cacheable else "no-store"
        )
        self.send_header("Last-Modified", "Thu, 01 Jan 2015 00:00:00 GMT")
        self.end_headers()
        self.wfile.write(body)


class RecordingServer(http.server.ThreadingHTTPServer):
    """An origin (or, answering absolute-URI requests, a stand-in parent proxy) that records requests."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, label: str, cacheable: bool = False, port: int = 0) -> None:
        self.label = label
        self.cacheable = cacheable
        self.recorder = Recorder()
        if host != "127.0.0.1":
            # The container bridge's gateway may not be up yet (see tests/support/netutil).
            self.freebind = True
        super().__init__((host, port), _RecordingHandler)

    def server_bind(self) -> None:
        if getattr(self, "freebind", False):
            self.socket.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
        super().server_bind()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@contextmanager
def serving(server: RecordingServer) -> Iterator[RecordingServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def access_log_lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def point_parent(text: str, host: str, port: int) -> str:
    """The parent-proxy example's cache_peer line aimed at a test parent."""
    result, count = re.subn(
        r"^(cache_peer\s+)\S+(\s+parent\s+)\d+",
        rf"\g<1>{host}\g<2>{port}",
        text,
        flags=re.MULTILINE,
    )
    if count != 1:
        raise AssertionError(
            "the parent-proxy example must have exactly one `cache_peer <host> parent <port>` line"
        )
    return result
