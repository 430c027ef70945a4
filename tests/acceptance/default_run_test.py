"""Case 3: a default run logs its startup in order, answers health checks and proxies to the host."""

from __future__ import annotations

from tests.support import harness, logs, netutil


def test_default_run(
    containers: harness.ContainerFactory, host_server: netutil.LocalServer, host_address: str
) -> None:
    proxy = containers.start("default")
    proxy.wait_ready()
    proxy.wait_for_log("Container ready, entering monitoring loop")

    logs.assert_in_order(
        proxy.logs().stdout,
        [
            "CephaloProxy entrypoint starting (UID: 1000, GID: 0)",
            # README's startup contract: the health server starts right after config
            # selection and the config check runs while it comes up.
            "Starting health server on port 8080",
            "Checking Squid config",
            "Starting Squid proxy...",
            "Squid started with PID",
            "Container ready, entering monitoring loop",
        ],
    )
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
