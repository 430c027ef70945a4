"""SSL-bump with the Squid under test: certgen DB, then a bumped CONNECT.

Certificates are made in the test with the openssl CLI: a bump CA (Squid signs
the minted certificates with it) and a separate origin certificate for a local
TLS server (Squid trusts it through tls_outgoing_options cafile=).
"""

from __future__ import annotations

import http.client
import http.server
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from squid.squid_under_test import (
    RunningSquid,
    SquidLayout,
    StaticBodyHandler,
    free_port,
    runtime_directives,
    serving,
    runnable_squid,
    state_directory,
)

BUMP_CA_NAME = "CephaloProxy Test Bump CA"


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl CLI is needed to make test certificates (Debian package: openssl)")
    result = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"openssl {' '.join(args)} failed:\n{result.stderr}"


def make_self_signed(
    directory: Path, stem: str, subject: str, extensions: list[str]
) -> tuple[Path, Path]:
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    extension_args = [arg for ext in extensions for arg in ("-addext", ext)]
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        subject,
        "-keyout",
        str(key),
        "-out",
        str(cert),
        *extension_args,
    )
    key.chmod(0o644)  # readable after Squid drops root privileges (test-only keys)
    return cert, key


@pytest.fixture(scope="module")
def layout() -> SquidLayout:
    return runnable_squid()


def init_certificate_db(layout: SquidLayout, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(layout.certgen), "-c", "-s", str(db), "-M", "4MB"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_certgen_creates_a_certificate_db(layout: SquidLayout) -> None:
    with state_directory() as state:
        db = state / "ssl_db"
        result = init_certificate_db(layout, db)
        assert result.returncode == 0, (
            f"security_file_certgen -c failed:\n{result.stdout}{result.stderr}"
        )
        assert (db / "index.txt").is_file()
        assert (db / "certs").is_dir()
        assert (db / "size").read_text().strip() == "0"


def test_certgen_refuses_an_existing_db(layout: SquidLayout) -> None:
    with state_directory() as state:
        db = state / "ssl_db"
        assert init_certificate_db(layout, db).returncode == 0
        again = init_certificate_db(layout, db)
    assert again.returncode != 0
    assert str(db) in again.stdout + again.stderr


class _TlsOriginHandler(StaticBodyHandler):
    body = b"bumped origin"


@pytest.fixture()
def tls_origin(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    cert, key = make_self_signed(
        tmp_path,
        "origin",
        "/CN=127.0.0.1",
        ["subjectAltName=IP:127.0.0.1", "basicConstraints=critical,CA:TRUE"],
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TlsOriginHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server) as port:
        yield port, cert


def test_bumps_a_connect_with_the_test_ca(
    layout: SquidLayout, tls_origin: tuple[int, Path]
) -> None:
    origin_port, origin_cert = tls_origin
    port = free_port()
    with state_directory() as state:
        bump_cert, bump_key = make_self_signed(
            state,
            "bump-ca",
            f"/CN={BUMP_CA_NAME}",
            ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"],
        )
        trusted_origin = state / "origin-ca.pem"
        shutil.copyfile(origin_cert, trusted_origin)
        db = state / "ssl_db"
        assert init_certificate_db(layout, db).returncode == 0
        config = state / "squid.conf"
        config.write_text(
            f"http_port 127.0.0.1:{port} ssl-bump tls-cert={bump_cert} tls-key={bump_key}"
            " generate-host-certificates=on dynamic_cert_mem_cache_size=4MB\n"
            f"sslcrtd_program {layout.certgen} -s {db} -M 4MB\n"
            "sslcrtd_children 2 startup=1 idle=1\n"
            "acl step1 at_step SslBump1\n"
            "ssl_bump peek step1\n"
            "ssl_bump bump all\n"
            f"tls_outgoing_options cafile={trusted_origin}\n"
            "http_access allow localhost\n"
            "http_access deny all\n"
            "cache deny all\n" + runtime_directives(state) + layout.data_directives()
        )
        db.chmod(0o777)
        for path in db.rglob("*"):
            path.chmod(0o777 if path.is_dir() else 0o666)

        with RunningSquid(layout, config, state, port):
            # The client trusts only the bump CA: the handshake succeeds only if
            # Squid presents a certificate minted and signed with it.
            client_context = ssl.create_default_context(cafile=str(bump_cert))
            # Python 3.13's default X509_STRICT also demands extensions (such as
            # an Authority Key Identifier) that Squid's minted certificates do
            # not carry; the chain must still lead to the bump CA.
            client_context.verify_flags &= ~ssl.VERIFY_X509_STRICT
            connection = http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=30, context=client_context
            )
            connection.set_tunnel("127.0.0.1", origin_port)
            try:
                connection.request("GET", "/secret")
                assert connection.sock is not None
                peer = connection.sock.getpeercert()  # before the response closes it
                response = connection.getresponse()
                body = response.read()
            finally:
                connection.close()
        # Read after Squid has exited: it logs a transaction when it ends.
        log = (state / "access.log").read_text()
        minted = list((db / "certs").glob("*.pem"))

    assert response.status == 200
    assert body == _TlsOriginHandler.body
    issuer = dict(item for rdn in peer["issuer"] for item in rdn)
    assert issuer.get("commonName") == BUMP_CA_NAME
    subject = dict(item for rdn in peer["subject"] for item in rdn)
    assert subject.get("commonName") == "127.0.0.1"  # mimicked from the origin
    assert f"https://127.0.0.1:{origin_port}/secret" in log
    assert minted, "security_file_certgen stored no minted certificate in its DB"
