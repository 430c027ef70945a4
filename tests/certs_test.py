"""Test-PKI generation with the real openssl CLI, verified by a real TLS handshake on 127.0.0.1."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest

from tests.support import certs, netutil


def _handshake(
    server_pair: certs.KeyPair, ca_cert: Path, server_hostname: str
) -> dict[str, object]:
    """Serve one TLS connection with `server_pair` and connect trusting only `ca_cert`."""
    server_context = netutil.server_tls_context(str(server_pair.cert), str(server_pair.key))
    listener = socket.create_server((netutil.LOOPBACK, 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError) as error:
            errors.append(error)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client_context = ssl.create_default_context(
            cafile=str(ca_cert)
        )  # strict defaults of this Python
        with socket.create_connection((netutil.LOOPBACK, port), timeout=10) as raw:
            with client_context.wrap_socket(raw, server_hostname=server_hostname) as tls:
                certificate = tls.getpeercert()
                tls.sendall(b"x")
    finally:
        thread.join(timeout=10)
        listener.close()
    assert not errors, errors
    return dict(certificate or {})


def test_ca_signed_server_cert_verifies_in_a_real_handshake(tmp_path: Path) -> None:
    ca = certs.generate_ca(tmp_path / "ca", "Unit Test CA")
    server = certs.generate_server_cert(ca, tmp_path / "server", ["secure.test", "127.0.0.1"])
    certificate = _handshake(server, ca.cert, "secure.test")
    assert netutil.name_field(certificate["issuer"]) == "Unit Test CA"
    alt_names = certificate["subjectAltName"]
    assert isinstance(alt_names, tuple), certificate
    assert ("DNS", "secure.test") in alt_names
    assert ("IP Address", "127.0.0.1") in alt_names


def test_other_ca_is_rejected(tmp_path: Path) -> None:
    ca = certs.generate_ca(tmp_path / "ca")
    stranger = certs.generate_ca(tmp_path / "stranger", "Stranger CA")
    server = certs.generate_server_cert(ca, tmp_path / "server", ["secure.test"])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, stranger.cert, "secure.test")


def test_wrong_host_name_is_rejected(tmp_path: Path) -> None:
    ca = certs.generate_ca(tmp_path / "ca")
    server = certs.generate_server_cert(ca, tmp_path / "server", ["secure.test"])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, ca.cert, "other.test")


def test_ca_is_a_usable_squid_signing_pair(tmp_path: Path) -> None:
    ca = certs.generate_ca(tmp_path / "ca")
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
        ca.cert, ca.key
    )  # raises if they do not match
    assert "CN=CephaloProxy Test CA" == certs.certificate_subject(ca.cert)


def test_tls_secret_dir_is_readable_by_any_uid(tmp_path: Path) -> None:
    ca = certs.generate_ca(tmp_path / "ca")
    secret = certs.write_tls_secret(tmp_path / "secret", ca.cert, ca.key)
    assert sorted(p.name for p in secret.iterdir()) == ["tls.crt", "tls.key"]
    assert stat.S_IMODE(secret.stat().st_mode) == 0o755
    assert all(stat.S_IMODE((secret / n).stat().st_mode) == 0o644 for n in ("tls.crt", "tls.key"))
    assert (secret / "tls.key").read_bytes() == ca.key.read_bytes()

    only_cert = certs.write_tls_secret(tmp_path / "only-cert", ca.cert, None)
    assert [p.name for p in only_cert.iterdir()] == ["tls.crt"]


def test_server_cert_needs_a_name(tmp_path: Path) -> None:
    ca = certs.generate_ca(tmp_path / "ca")
    with pytest.raises(certs.CertificateError, match="at least one"):
        certs.generate_server_cert(ca, tmp_path / "server", [])
