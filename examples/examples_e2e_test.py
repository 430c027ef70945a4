"""The example configs do what their headers promise, with the Squid under test on this host.

Each example file is used as shipped, with its image paths relocated into a
temporary image-like tree (testing.relocate) and its port moved to a free
loopback one. Names resolve through a test hosts_file, so nothing leaves the
machine. The container acceptance suite runs the same examples in the image.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from examples import testing
from tests.support import certs, netutil
from tools.squid.squid_under_test import SquidLayout, squid_under_test

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def layout() -> SquidLayout:
    return squid_under_test()


@pytest.fixture
def tree() -> Iterator[testing.ImageTree]:
    with testing.image_tree() as tree:
        yield tree


def configure(
    example: str,
    tree: testing.ImageTree,
    layout: SquidLayout,
    hosts: dict[str, str] | None = None,
    extra: str = "",
    text: str | None = None,
) -> tuple[Path, int]:
    """The example relocated into `tree`, on a free loopback port, names from a hosts file."""
    port = testing.free_port()
    tree.install_conf_d(example)
    hosts_file = tree.write(
        "/etc/hosts.test", "".join(f"{address} {name}\n" for name, address in (hosts or {}).items())
    )
    source = testing.example_config(example).read_text() if text is None else text
    body = testing.listen_on(testing.relocate(source, tree, layout), port)
    additions = f"hosts_file {hosts_file}\ndns_nameservers 127.0.0.1\n" + extra
    config = tree.write("/etc/squid/squid.conf", body + testing.test_directives(layout, additions))
    return config, port


def test_domain_filtering_denies_the_listed_domains(
    tree: testing.ImageTree, layout: SquidLayout
) -> None:
    entries = testing.list_entries(
        testing.example_conf_d("domain-filtering") / "blocked-domains.txt"
    )
    wildcard = next(entry for entry in entries if entry.startswith("."))
    exact = next(entry for entry in entries if not entry.startswith("."))
    blocked = [wildcard.lstrip("."), "www" + wildcard, exact]
    with netutil.LocalServer(LOOPBACK) as origin:
        # Every name resolves to the origin, so a request that slipped through would reach it.
        config, port = configure(
            "domain-filtering",
            tree,
            layout,
            hosts={name: LOOPBACK for name in [*blocked, "allowed.test"]},
        )
        with testing.HostSquid(layout, config, tree, port) as squid:
            for name in blocked:
                url = f"http://{name}:{origin.port}/must-not-arrive"
                denied = testing.proxy_request(LOOPBACK, port, url)
                assert denied.status == 403, (name, denied)
                log = squid.wait_for_log(url)
                assert any(
                    "TCP_DENIED/403" in line for line in testing.access_log_lines(log, url)
                ), log
            assert origin.requests == 0, "a blocked domain reached the origin"

            allowed = testing.proxy_request(
                LOOPBACK, port, f"http://allowed.test:{origin.port}/fine"
            )
            assert (allowed.status, allowed.body) == (200, origin.expected_body("/fine"))
            assert origin.requests == 1


def test_basic_auth_requires_the_htpasswd_credentials(
    tree: testing.ImageTree, layout: SquidLayout
) -> None:
    tree.write("/etc/squid/auth/htpasswd", testing.htpasswd_line("alice", "correct horse"), 0o644)
    with netutil.LocalServer(LOOPBACK) as origin:
        config, port = configure("basic-auth", tree, layout)
        with testing.HostSquid(layout, config, tree, port):
            url = origin.url("/private")
            anonymous = testing.proxy_request(LOOPBACK, port, url)
            assert anonymous.status == 407, anonymous
            assert 'Basic realm="CephaloProxy"' in anonymous.headers.get("proxy-authenticate", "")

            wrong = testing.proxy_request(
                LOOPBACK, port, url, testing.basic_credentials("alice", "wrong")
            )
            assert wrong.status == 407, wrong
            assert origin.requests == 0

            right = testing.proxy_request(
                LOOPBACK, port, url, testing.basic_credentials("alice", "correct horse")
            )
            assert (right.status, right.body) == (200, origin.expected_body("/private"))
            assert origin.requests == 1


def test_ssl_bump_signs_with_the_mounted_ca_and_splices_the_no_bump_list(
    tree: testing.ImageTree, layout: SquidLayout, tmp_path: Path
) -> None:
    spliced_entry = testing.list_entries(
        testing.example_conf_d("ssl-bump") / "no-bump-domains.txt"
    )[0]
    spliced_name = "www" + spliced_entry if spliced_entry.startswith(".") else spliced_entry
    bumped_name = "bumped.test"
    bump_ca = certs.generate_ca(tmp_path / "bump-ca", "CephaloProxy Example Bump CA")
    upstream_ca = certs.generate_ca(tmp_path / "upstream-ca", "CephaloProxy Example Upstream CA")
    server = certs.generate_server_cert(
        upstream_ca, tmp_path / "server", [bumped_name, spliced_name]
    )
    # What the entrypoint does with the mounted tls.crt/tls.key.
    tree.write(
        "/var/lib/squid/squid-ca.pem", bump_ca.cert.read_text() + bump_ca.key.read_text(), 0o644
    )
    testing.create_cert_db(layout, tree.path("/var/lib/squid/ssl_db"))
    upstream_ca_copy = tree.write("/etc/squid/upstream-ca.crt", upstream_ca.cert.read_text())

    tls = netutil.server_tls_context(str(server.cert), str(server.key))
    with netutil.LocalServer(LOOPBACK, tls=tls) as origin:
        config, port = configure(
            "ssl-bump",
            tree,
            layout,
            hosts={bumped_name: LOOPBACK, spliced_name: LOOPBACK},
            # The test origin's port is not 443, and its CA is not in the system bundle.
            extra=f"acl SSL_ports port {origin.port}\ntls_outgoing_options cafile={upstream_ca_copy}\n",
        )
        with testing.HostSquid(layout, config, tree, port) as squid:
            bumped = netutil.tls_get_via_connect(
                LOOPBACK,
                port,
                bumped_name,
                origin.port,
                "/bumped",
                netutil.client_tls_context(str(bump_ca.cert)),
            )
            assert (bumped.status, bumped.body) == (200, origin.expected_body("/bumped")), (
                squid.logs()
            )
            assert (
                netutil.name_field(bumped.peer_certificate.get("issuer"))
                == "CephaloProxy Example Bump CA"
            )

            spliced = netutil.tls_get_via_connect(
                LOOPBACK,
                port,
                spliced_name,
                origin.port,
                "/spliced",
                netutil.client_tls_context(str(upstream_ca.cert)),
            )
            assert (spliced.status, spliced.body) == (200, origin.expected_body("/spliced")), (
                squid.logs()
            )
            assert (
                netutil.name_field(spliced.peer_certificate.get("issuer"))
                == "CephaloProxy Example Upstream CA"
            )
            assert origin.requests == 2
            # A bumped request is logged with its https:// URL; a spliced tunnel only as CONNECT.
            log = squid.wait_for_log(f"https://{bumped_name}:{origin.port}/bumped")
            assert f"https://{bumped_name}:{origin.port}/bumped" in log, log
            assert f"https://{spliced_name}" not in log, log


def test_disk_cache_answers_the_second_request_from_disk(
    tree: testing.ImageTree, layout: SquidLayout
) -> None:
    server = testing.RecordingServer(LOOPBACK, "cacheable", cacheable=True)
    with testing.serving(server):
        config, port = configure("disk-cache", tree, layout)
        url = f"http://{LOOPBACK}:{server.port}/object"
        squid = testing.HostSquid(layout, config, tree, port)
        squid.initialise_cache()
        assert (tree.path("/var/spool/squid") / "00").is_dir(), (
            "squid -z did not create the ufs cache_dir"
        )
        with squid:
            first = testing.proxy_request(LOOPBACK, port, url)
            assert first.status == 200
            squid.wait_for_log(url)
        # A restart empties the memory cache: a hit now can only come from disk.
        with testing.HostSquid(layout, config, tree, port) as squid:
            second = testing.proxy_request(LOOPBACK, port, url)
            assert (second.status, second.body) == (200, first.body)
            log = squid.wait_for_log("TCP_HIT/200")
            lines = testing.access_log_lines(log, url)
            assert lines and "TCP_HIT/200" in lines[-1], log
        assert server.recorder.targets() == ["/object"], "the second request reached the origin"


def test_parent_proxy_receives_every_request(tree: testing.ImageTree, layout: SquidLayout) -> None:
    parent = testing.RecordingServer(LOOPBACK, "parent")
    peer_name = "parent-proxy.example.internal"
    with testing.serving(parent), netutil.LocalServer(LOOPBACK) as origin:
        text = testing.point_parent(
            testing.example_config("parent-proxy").read_text(), peer_name, parent.port
        )
        config, port = configure(
            "parent-proxy", tree, layout, hosts={peer_name: LOOPBACK}, text=text
        )
        with testing.HostSquid(layout, config, tree, port) as squid:
            url = "http://origin.test/through-the-parent"
            response = testing.proxy_request(LOOPBACK, port, url)
            assert (response.status, response.body) == (200, f"parent {url}\n".encode()), (
                squid.logs()
            )
            assert parent.recorder.targets() == [url]
            log = squid.wait_for_log(url)
            assert any("PARENT/" in line for line in testing.access_log_lines(log, url)), log


def test_parent_proxy_never_goes_direct(tree: testing.ImageTree, layout: SquidLayout) -> None:
    """never_direct: with the parent down, a reachable origin is still not contacted."""
    peer_name = "parent-proxy.example.internal"
    dead_port = testing.free_port()  # nothing listens here
    with netutil.LocalServer(LOOPBACK) as origin:
        text = testing.point_parent(
            testing.example_config("parent-proxy").read_text(), peer_name, dead_port
        )
        config, port = configure(
            "parent-proxy", tree, layout, hosts={peer_name: LOOPBACK}, text=text
        )
        with testing.HostSquid(layout, config, tree, port):
            failed = testing.proxy_request(LOOPBACK, port, origin.url("/direct"))
            assert failed.status >= 500, failed
            assert origin.requests == 0
