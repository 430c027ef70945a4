"""Case 9: `stop` (30 s grace) ends with exit code 0 and the shutdown log lines, idle or mid-download."""

from __future__ import annotations

import http.client
import threading
import time

from tests.support import harness, logs, netutil, timeouts

GRACE_S = 30  # the contract (`stop --time 30`): not scaled; the waits below are
# Transfers in flight drain until SHUTDOWN_TIMEOUT, which must be shorter than the runtime's
# grace period (README: grace = SHUTDOWN_TIMEOUT + a margin); a 120 s download is cut then.
BUSY_SHUTDOWN_TIMEOUT_S = 12


def _assert_clean_shutdown(proxy: harness.ProxyContainer, elapsed: float) -> None:
    state = proxy.state()
    output = proxy.logs()
    assert state.exit_code == 0, (
        f"exit code {state.exit_code} after {elapsed:.1f} s:\n{output.combined}"
    )
    # A SIGKILL at the end of the grace period would give 137, so 0 already proves it
    # stopped inside the grace period; the elapsed bound states it plainly.
    assert elapsed < GRACE_S, f"stop took {elapsed:.1f} s"
    logs.assert_in_order(
        output.stdout,
        [
            "Container ready",
            "Received signal SIGTERM, initiating graceful shutdown...",
            "Shutdown complete",
        ],
    )


def test_stop_idle_proxy(containers: harness.ContainerFactory) -> None:
    proxy = containers.start("stop-idle")
    proxy.wait_ready()
    elapsed = proxy.stop(GRACE_S)
    _assert_clean_shutdown(proxy, elapsed)


class _Download(threading.Thread):
    """Streams a slow response through the proxy, counting bytes until the proxy goes away."""

    def __init__(self, proxy_port: int, url: str) -> None:
        super().__init__(daemon=True)
        self.proxy_port, self.url = proxy_port, url
        self.received = 0
        self.ended = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection(
            netutil.LOOPBACK, self.proxy_port, timeout=timeouts.scaled(60)
        )
        try:
            connection.request("GET", self.url)
            response = connection.getresponse()
            while chunk := response.read(1024):
                self.received += len(chunk)
        except (OSError, http.client.HTTPException):
            pass  # the proxy shutting down mid-download is the point of the test
        finally:
            connection.close()
            self.ended.set()


def test_stop_during_active_downloads(
    containers: harness.ContainerFactory, host_server: netutil.LocalServer, host_address: str
) -> None:
    proxy = containers.start("stop-busy", env={"SHUTDOWN_TIMEOUT": str(BUSY_SHUTDOWN_TIMEOUT_S)})
    proxy.wait_ready()
    downloads = [
        _Download(proxy.proxy_port, host_server.url(f"/slow?seconds=120&n={n}", host=host_address))
        for n in range(3)
    ]
    for download in downloads:
        download.start()
    deadline = time.monotonic() + timeouts.scaled(30)
    while not all(d.received > 0 for d in downloads) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(d.received > 0 for d in downloads), [d.received for d in downloads]
    assert not any(d.ended.is_set() for d in downloads), (
        "downloads must still be running when stop begins"
    )

    elapsed = proxy.stop(GRACE_S)
    _assert_clean_shutdown(proxy, elapsed)
    # The downloads were drained, not cut at once: the stop waited for SHUTDOWN_TIMEOUT.
    assert elapsed >= BUSY_SHUTDOWN_TIMEOUT_S, (
        f"stop took only {elapsed:.1f} s: transfers were not drained"
    )
    logs.assert_in_order(
        proxy.logs().stdout,
        ["Received signal SIGTERM", "Draining 3 client connections (up to 12 s)..."],
    )
    for download in downloads:
        assert download.ended.wait(timeouts.scaled(30)), (
            "client connections must be closed once the container is gone"
        )
