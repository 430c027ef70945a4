"""Case 6: a custom squid.conf mounted read-only: its ACL denies one domain, others pass."""

from __future__ import annotations

from pathlib import Path

from tests.support import harness, netutil
from tests.support.runtime import Mount


def test_custom_config_denies_one_domain(
    containers: harness.ContainerFactory,
    host_server: netutil.LocalServer,
    host_address: str,
    default_squid_conf: str,
    tmp_path: Path,
) -> None:
    # First match wins in http_access, so the deny goes before the packaged rules.
    config = harness.write_readable(
        tmp_path / "conf" / "squid.conf",
        "acl denied_domain dstdomain denied.test\nhttp_access deny denied_domain\n"
        + default_squid_conf,
    )
    proxy = containers.start(
        "customconf",
        mounts=[Mount(config, harness.CONFIG_PATH, read_only=True)],
        add_hosts={"allowed.test": host_address, "denied.test": host_address},
    )
    proxy.wait_ready()
    assert f"Using custom Squid config {harness.CONFIG_PATH}" in proxy.logs().stdout

    denied = proxy.get_via_proxy(f"http://denied.test:{host_server.port}/blocked")
    assert denied.status == 403, denied
    assert host_server.requests == 0, "a denied request must not reach the server"

    allowed = proxy.get_via_proxy(f"http://allowed.test:{host_server.port}/allowed")
    assert (allowed.status, allowed.body) == (200, host_server.expected_body("/allowed"))
    assert host_server.requests == 1
