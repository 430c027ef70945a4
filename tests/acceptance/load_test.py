"""Case 11: a bounded burst through the proxy completes without errors while /health stays 200."""

from __future__ import annotations

from tests.support import harness, netutil, timeouts

TOTAL_REQUESTS = 2000
CONNECTIONS = 20


def test_burst_without_errors_while_healthy(
    containers: harness.ContainerFactory, host_server: netutil.LocalServer, host_address: str
) -> None:
    proxy = containers.start("load")
    proxy.wait_ready()
    with netutil.StatusPoller(netutil.LOOPBACK, proxy.health_port, "/health") as poller:
        result = netutil.run_burst(
            netutil.LOOPBACK,
            proxy.proxy_port,
            url_for=lambda i: host_server.url(f"/burst/{i}", host=host_address),
            expected_body=lambda i: host_server.expected_body(f"/burst/{i}"),
            total=TOTAL_REQUESTS,
            connections=CONNECTIONS,
            request_timeout=timeouts.scaled(30),
            deadline_s=timeouts.scaled(300),
        )
    assert result.error_count == 0, result.errors
    assert result.succeeded == TOTAL_REQUESTS
    assert host_server.requests == TOTAL_REQUESTS  # no-store: every request went upstream
    assert poller.outcomes, "the health poller never ran"
    assert poller.failures() == [], poller.failures()[:10]
    assert proxy.is_running()
