"""Case 12: the example configs (examples/) in the image, mounted as their headers say.

Each example directory is copied (readable by the container's UID) and mounted at
/etc/squid/custom with CEPHALOPROXY_CONFIG pointing into it, its conf.d at
/etc/squid/conf.d, on a read-only root with tmpfs runtime dirs. Only what a test
origin forces is changed: the parent proxy's address, and for SSL-bump the test
server's port and CA.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from examples import testing as examples
from tests.support import certs, harness, netutil
from tests.support.runtime import Mount, wait_until

CUSTOM_DIR = "/etc/squid/custom"
CONF_D_DIR = "/etc/squid/conf.d"
CONFIG_ENV = {"CEPHALOPROXY_CONFIG": f"{CUSTOM_DIR}/squid.conf"}


def readable_copy(example: str, destination: Path, config_text: str | None = None) -> Path:
    """The example directory, world-readable, optionally with an adapted squid.conf."""
    target = destination / example
    shutil.copytree(examples.EXAMPLES_DIR / example, target, symlinks=False)
    if config_text is not None:
        (target / "squid.conf").write_text(config_text)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    destination.chmod(0o755)
    return target


def example_mounts(copy: Path) -> list[Mount]:
    mounts = [Mount(copy, CUSTOM_DIR, read_only=True)]
    if (copy / "conf.d").is_dir():
        mounts.append(Mount(copy / "conf.d", CONF_D_DIR, read_only=True))
    return mounts


def start_example(
    containers: harness.ContainerFactory,
    copy: Path,
    extra_mounts: list[Mount] | None = None,
    add_hosts: dict[str, str] | None = None,
    tmpfs: list[str] | None = None,
) -> harness.ProxyContainer:
    proxy = containers.start(
        copy.name,
        env=CONFIG_ENV,
        mounts=[*example_mounts(copy), *(extra_mounts or [])],
        read_only=True,
        tmpfs=harness.tmpfs_runtime_dirs() if tmpfs is None else tmpfs,
        add_hosts=add_hosts,
    )
    proxy.wait_ready()
    assert f"Using custom Squid config {CUSTOM_DIR}/squid.conf" in proxy.logs().stdout
    return proxy


def test_domain_filtering_denies_the_listed_domains(
    containers: harness.ContainerFactory,
    host_server: netutil.LocalServer,
    host_address: str,
    tmp_path: Path,
) -> None:
    copy = readable_copy("domain-filtering", tmp_path / "conf")
    entries = examples.list_entries(copy / "conf.d" / "blocked-domains.txt")
    blocked = [
        "www" + next(e for e in entries if e.startswith(".")),
        next(e for e in entries if not e.startswith(".")),
    ]
    proxy = start_example(
        containers, copy, add_hosts={name: host_address for name in [*blocked, "allowed.test"]}
    )
    for name in blocked:
        url = f"http://{name}:{host_server.port}/must-not-arrive"
        assert proxy.get_via_proxy(url).status == 403
        assert wait_for_access_log(proxy, url, "TCP_DENIED/403")
    assert host_server.requests == 0, "a blocked domain reached the origin"
    allowed = proxy.get_via_proxy(f"http://allowed.test:{host_server.port}/fine")
    assert (allowed.status, allowed.body) == (200, host_server.expected_body("/fine"))


def wait_for_access_log(
    proxy: harness.ProxyContainer, url: str, status: str, timeout: float = 15.0
) -> bool:
    """Squid writes the access log line after the response; wait for it in the container's stdout."""
    return wait_until(
        lambda: any(status in line for line in examples.access_log_lines(proxy.logs().stdout, url)),
        timeout,
    )


def test_basic_auth_requires_the_htpasswd_credentials(
    containers: harness.ContainerFactory,
    host_server: netutil.LocalServer,
    host_address: str,
    tmp_path: Path,
) -> None:
    copy = readable_copy("basic-auth", tmp_path / "conf")
    auth = harness.write_readable(
        tmp_path / "auth" / "htpasswd", examples.htpasswd_line("alice", "correct horse")
    )
    proxy = start_example(
        containers, copy, extra_mounts=[Mount(auth.parent, "/etc/squid/auth", read_only=True)]
    )
    url = host_server.url("/private", host=host_address)
    anonymous = examples.proxy_request(netutil.LOOPBACK, proxy.proxy_port, url)
    assert anonymous.status == 407, anonymous
    assert 'Basic realm="CephaloProxy"' in anonymous.headers.get("proxy-authenticate", "")
    wrong = examples.proxy_request(
        netutil.LOOPBACK, proxy.proxy_port, url, examples.basic_credentials("alice", "nope")
    )
    assert wrong.status == 407
    assert host_server.requests == 0
    right = examples.proxy_request(
        netutil.LOOPBACK,
        proxy.proxy_port,
        url,
        examples.basic_credentials("alice", "correct horse"),
    )
    assert (right.status, right.body) == (200, host_server.expected_body("/private"))
    assert host_server.requests == 1


def test_ssl_bump_signs_with_the_mounted_ca_and_splices_the_no_bump_list(
    containers: harness.ContainerFactory, host_address: str, test_ca: certs.KeyPair, tmp_path: Path
) -> None:
    spliced_entry = examples.list_entries(
        examples.example_conf_d("ssl-bump") / "no-bump-domains.txt"
    )[0]
    spliced_name = "www" + spliced_entry if spliced_entry.startswith(".") else spliced_entry
    bumped_name = "bumped.test"
    upstream_ca = certs.generate_ca(tmp_path / "upstream-ca", "CephaloProxy Upstream Test CA")
    server = certs.generate_server_cert(
        upstream_ca, tmp_path / "server", [bumped_name, spliced_name]
    )
    secret = certs.write_tls_secret(tmp_path / "secret", test_ca.cert, test_ca.key)
    shutil.copyfile(upstream_ca.cert, secret / "upstream-ca.crt")
    (secret / "upstream-ca.crt").chmod(0o644)
    tls = netutil.server_tls_context(str(server.cert), str(server.key))
    with netutil.LocalServer(host_address, tls=tls, freebind=True) as origin:
        # The test origin listens on a random port with a private CA; nothing else changes.
        text = (examples.example_config("ssl-bump").read_text()
                + f"acl SSL_ports port {origin.port}\n"
                + f"tls_outgoing_options cafile={harness.TLS_SECRET_PATH}/upstream-ca.crt\n")  # fmt: skip
        copy = readable_copy("ssl-bump", tmp_path / "conf", text)
        proxy = start_example(
            containers,
            copy,
            extra_mounts=[Mount(secret, harness.TLS_SECRET_PATH, read_only=True)],
            add_hosts={bumped_name: host_address, spliced_name: host_address},
        )
        bumped = netutil.tls_get_via_connect(
            netutil.LOOPBACK, proxy.proxy_port, bumped_name, origin.port, "/bumped",
            netutil.client_tls_context(str(test_ca.cert)),
        )  # fmt: skip
        assert (bumped.status, bumped.body) == (200, origin.expected_body("/bumped"))
        assert netutil.name_field(bumped.peer_certificate.get("issuer")) == "CephaloProxy Test CA"
        spliced = netutil.tls_get_via_connect(
            netutil.LOOPBACK, proxy.proxy_port, spliced_name, origin.port, "/spliced",
            netutil.client_tls_context(str(upstream_ca.cert)),
        )  # fmt: skip
        assert (spliced.status, spliced.body) == (200, origin.expected_body("/spliced"))
        assert (
            netutil.name_field(spliced.peer_certificate.get("issuer"))
            == "CephaloProxy Upstream Test CA"
        )
        assert origin.requests == 2


def test_parent_proxy_receives_every_request(
    containers: harness.ContainerFactory, host_address: str, tmp_path: Path
) -> None:
    peer_name = "parent-proxy.example.internal"
    parent = examples.RecordingServer(host_address, "parent")
    with examples.serving(parent):
        text = examples.point_parent(
            examples.example_config("parent-proxy").read_text(), peer_name, parent.port
        )
        copy = readable_copy("parent-proxy", tmp_path / "conf", text)
        proxy = start_example(containers, copy, add_hosts={peer_name: host_address})
        url = "http://origin.test/through-the-parent"
        response = proxy.get_via_proxy(url)
        assert (response.status, response.body) == (200, f"parent {url}\n".encode())
        assert parent.recorder.targets() == [url]


def test_disk_cache_survives_a_new_container(
    containers: harness.ContainerFactory, host_address: str, tmp_path: Path
) -> None:
    """Like a PersistentVolumeClaim: a second container on the same spool volume answers from disk."""
    copy = readable_copy("disk-cache", tmp_path / "conf")
    spool = tmp_path / "spool"
    spool.mkdir()
    spool.chmod(0o777)
    tmpfs = [d for d in harness.tmpfs_runtime_dirs() if d != "/var/spool/squid"]
    origin = examples.RecordingServer(host_address, "cacheable", cacheable=True)
    with examples.serving(origin):
        url = f"http://{host_address}:{origin.port}/object"
        first_proxy = start_example(
            containers, copy, [Mount(spool, "/var/spool/squid", read_only=False)], tmpfs=tmpfs
        )
        assert "squid -z" in first_proxy.logs().combined or (spool / "00").is_dir()
        first = first_proxy.get_via_proxy(url)
        assert first.status == 200
        assert wait_for_access_log(first_proxy, url, "TCP_MISS")
        first_proxy.stop()
        second_proxy = start_example(
            containers, copy, [Mount(spool, "/var/spool/squid", read_only=False)], tmpfs=tmpfs
        )
        second = second_proxy.get_via_proxy(url)
        assert (second.status, second.body) == (200, first.body)
        assert wait_for_access_log(second_proxy, url, "TCP_HIT/200"), second_proxy.logs().stdout
        assert origin.recorder.targets() == ["/object"], "the second request reached the origin"
