"""Case 3: a default run logs its startup in order, answers health checks and proxies to the host."""

from __future__ import annotations

import pytest

from tests.support import harness, logs, netutil

# docs/building.md ("Platforms"): CI runs these against the arm64 image under qemu too.
pytestmark = pytest.mark.arm64


def test_default_run(
    containers: harness.ContainerFactory, host_server: netutil.LocalServer, host_address: str
) -> None:
    proxy = containers.start("default")
    proxy.wait_ready()
    proxy.wait_for_log("Container ready, entering monitoring loop")

    stdout = proxy.logs().stdout
    steps = logs.assert_in_order(
        stdout,
        [
            "CephaloProxy entrypoint starting (UID: 1000, GID: 0)",
            "Checking Squid config",
            "Starting Squid proxy...",
            "Squid started with PID",
            "Container ready, entering monitoring loop",
        ],
    )
    # The startup contract (docs/operating.md, step 9): the health server starts once Squid
    # listens, so it does not compete with Squid's start; or, when the config check (or a first
    # `squid -z`, as here: the default cache_dir is new) takes over 0.25 s, during it.
    [health] = [
        line
        for line in logs.parse_log_lines(stdout)
        if "Starting health server on port 8080" in line.message
    ]
    checking, starting_squid, squid_started, ready = steps[1:]
    assert (
        checking.index < health.index < starting_squid.index
        or squid_started.index < health.index < ready.index
    ), stdout
    for path, body in (("/health", b"OK"), ("/ready", b"READY")):
        result = proxy.health(path)
        assert result.status == 200, (path, result)
        assert result.body.strip() == body, (path, result.body)

    url = host_server.url("/through-the-proxy", host=host_address)
    result = proxy.get_via_proxy(url)
    assert result.status == 200, result
    assert result.body == host_server.expected_body("/through-the-proxy")
    assert host_server.requests == 1

    healthcheck = containers.runtime.exec(
        proxy.name, ["python3", "/usr/local/bin/healthcheck.py", "--check"]
    )
    assert healthcheck.returncode == 0, (healthcheck.stdout, healthcheck.stderr)

    # Metrics built in (docs/operating.md "Metrics"): Squid's own figures from its cache manager
    # (the request proxied above is counted) and PID 1's, in Prometheus' text format.
    metrics = proxy.health("/metrics")
    assert metrics.status == 200, metrics
    assert metrics.headers.get("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    text = metrics.body.decode("utf-8")
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert samples.get("squid_up") == "1", text[:3000]
    assert float(samples["squid_client_http_requests_total"]) >= 1, text[:3000]
    assert any(name.startswith("cephaloproxy_build_info{") for name in samples), text[:3000]
