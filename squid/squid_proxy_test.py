"""The Squid under test parses the packaged default config and proxies plain HTTP."""

from __future__ import annotations

import http.server
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

from squid.squid_under_test import (
    REPO_ROOT,
    RunningSquid,
    SquidLayout,
    StaticBodyHandler,
    free_port,
    privilege_directives,
    runtime_directives,
    serving,
    runnable_squid,
    state_directory,
)

DEFAULT_CONFIG = REPO_ROOT / "entrypoint" / "squid.conf.default"


@pytest.fixture(scope="module")
def layout() -> SquidLayout:
    return runnable_squid()


def test_parses_the_packaged_default_config(layout: SquidLayout) -> None:
    if not DEFAULT_CONFIG.is_file():
        pytest.fail(f"{DEFAULT_CONFIG} is missing (owned by entrypoint/)")
    with state_directory() as state:
        # The default config as shipped, plus where this root keeps its data
        # files when it is not installed at "/": later lines override earlier.
        config = state / "squid.conf"
        config.write_text(
            DEFAULT_CONFIG.read_text() + "\n" + layout.data_directives() + privilege_directives()
        )
        result = subprocess.run(
            [str(layout.squid), "-k", "parse", "-f", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"squid -k parse failed ({result.returncode}):\n{output}"
    assert "FATAL" not in output and "ERROR" not in output, output


@pytest.fixture()
def origin() -> Iterator[tuple[int, bytes]]:
    body = f"origin body {free_port()}".encode()
    handler = type("Handler", (StaticBodyHandler,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    with serving(server) as port:
        yield port, body


def test_proxies_http_to_a_local_server(layout: SquidLayout, origin: tuple[int, bytes]) -> None:
    origin_port, body = origin
    port = free_port()
    with state_directory() as state:
        config = state / "squid.conf"
        config.write_text(
            f"http_port 127.0.0.1:{port}\n"
            "http_access allow localhost\n"
            "http_access deny all\n"
            # Proxy only; nothing cached, so the origin sees the request.
            "cache deny all\n" + runtime_directives(state) + layout.data_directives()
        )
        with RunningSquid(layout, config, state, port):
            opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"})
            )
            with opener.open(f"http://127.0.0.1:{origin_port}/hello", timeout=30) as response:
                received = response.read()
                via = response.headers.get("Via", "")
        access_log = (state / "access.log").read_text()
    assert received == body
    assert "squid/" in via, f"response did not pass through Squid (Via: {via!r})"
    assert f"http://127.0.0.1:{origin_port}/hello" in access_log
