"""Case 7: SSL-bump with a CA from a mounted TLS secret: the client sees a certificate issued by that CA."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support import certs, harness, netutil, timeouts
from tests.support.runtime import Mount

TARGET_NAME = "secure.test"
UPSTREAM_CA_FILE = "upstream-ca.crt"


def test_connect_is_bumped_with_the_test_ca(
    containers: harness.ContainerFactory,
    host_address: str,
    default_squid_conf: str,
    test_ca: certs.KeyPair,
    tmp_path: Path,
) -> None:
    # The upstream server's certificate comes from a *different* CA. A client that
    # trusts only the bump CA can therefore only succeed if Squid re-signed the
    # connection, and the issuer it sees tells the two apart.
    upstream_ca = certs.generate_ca(tmp_path / "upstream-ca", "CephaloProxy Upstream Test CA")
    server_pair = certs.generate_server_cert(upstream_ca, tmp_path / "server", [TARGET_NAME])
    secret = certs.write_tls_secret(tmp_path / "secret", test_ca.cert, test_ca.key)
    shutil.copyfile(upstream_ca.cert, secret / UPSTREAM_CA_FILE)
    (secret / UPSTREAM_CA_FILE).chmod(0o644)

    tls_context = netutil.server_tls_context(str(server_pair.cert), str(server_pair.key))
    with netutil.LocalServer(host_address, tls=tls_context, freebind=True) as server:
        config_text = harness.ssl_bump_config(
            default_squid_conf,
            [server.port],
            upstream_ca=f"{harness.TLS_SECRET_PATH}/{UPSTREAM_CA_FILE}",
        )
        config = harness.write_readable(tmp_path / "conf" / "squid.conf", config_text)
        proxy = containers.start(
            "sslbump",
            mounts=[
                Mount(config, harness.CONFIG_PATH, read_only=True),
                Mount(secret, harness.TLS_SECRET_PATH, read_only=True),
            ],
            add_hosts={TARGET_NAME: host_address},
        )
        proxy.wait_ready()
        assert "SSL-bump configured" in proxy.logs().stdout

        result = netutil.tls_get_via_connect(
            netutil.LOOPBACK,
            proxy.proxy_port,
            TARGET_NAME,
            server.port,
            "/bumped",
            netutil.client_tls_context(str(test_ca.cert)),
            timeout=timeouts.scaled(30),
        )
        assert result.status == 200
        assert result.body == server.expected_body("/bumped")
        assert netutil.name_field(result.peer_certificate.get("issuer")) == "CephaloProxy Test CA"
        assert server.requests == 1
