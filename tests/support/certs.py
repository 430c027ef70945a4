"""Test PKI made with the `openssl` CLI: a CA, server certificates it signs, TLS secret dirs.

Keys are throwaway test material in a temporary directory. Extensions follow what a
strict verifier (Python 3.13's VERIFY_X509_STRICT, Squid) expects: CA with critical
basicConstraints/keyUsage, leaves with SAN, AKI and serverAuth.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

OPENSSL_TIMEOUT_S = 60.0


class CertificateError(RuntimeError):
    """openssl is missing or one of its commands failed."""


@dataclasses.dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _openssl(args: Sequence[str], cwd: Path) -> None:
    executable = shutil.which("openssl")
    if executable is None:
        raise CertificateError(
            "the `openssl` command is required to generate test certificates; install openssl"
        )
    done = subprocess.run(
        [executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=OPENSSL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise CertificateError(
            f"openssl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
        )


def generate_ca(
    directory: Path, common_name: str = "CephaloProxy Test CA", days: int = 2
) -> KeyPair:
    """A self-signed CA certificate and its unencrypted RSA key."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.crt", directory / "ca.key"
    _openssl(
        [
            "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-days", str(days), "-subj", f"/CN={common_name}",
            "-keyout", str(key), "-out", str(cert),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-addext", "subjectKeyIdentifier=hash",
        ],
        directory,
    )  # fmt: skip
    return KeyPair(cert, key)


def subject_alt_names(names: Sequence[str]) -> str:
    entries = []
    for name in names:
        try:
            ipaddress.ip_address(name)
            entries.append(f"IP:{name}")
        except ValueError:
            entries.append(f"DNS:{name}")
    return ",".join(entries)


def generate_server_cert(
    ca: KeyPair, directory: Path, names: Sequence[str], days: int = 2
) -> KeyPair:
    """A server certificate for `names` (DNS names and/or IPs) signed by `ca`."""
    if not names:
        raise CertificateError("a server certificate needs at least one DNS name or IP address")
    directory.mkdir(parents=True, exist_ok=True)
    stem = "server-" + secrets.token_hex(4)
    key, csr, cert = directory / f"{stem}.key", directory / f"{stem}.csr", directory / f"{stem}.crt"
    extensions = directory / f"{stem}.ext"
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        f"subjectAltName={subject_alt_names(names)}\n",
        encoding="utf-8",
    )
    _openssl(
        ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", f"/CN={names[0]}",
         "-keyout", str(key), "-out", str(csr)],
        directory,
    )  # fmt: skip
    _openssl(
        ["x509", "-req", "-sha256", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
         "-set_serial", str(secrets.randbits(63)), "-days", str(days),
         "-extfile", str(extensions), "-out", str(cert)],
        directory,
    )  # fmt: skip
    return KeyPair(cert, key)


def write_tls_secret(directory: Path, cert: Path | None, key: Path | None) -> Path:
    """A Kubernetes-TLS-secret-like dir (tls.crt, tls.key) readable by any container UID.

    Secrets mount as 0644 files in a traversable dir by default in Kubernetes; the
    container runs as a non-root UID that does not own these host files, so the test
    copy must be world-readable too. It is throwaway test key material.
    Pass None for a file to leave it out (to test the missing-file error).
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    for source, name in ((cert, "tls.crt"), (key, "tls.key")):
        if source is not None:
            target = directory / name
            shutil.copyfile(source, target)
            os.chmod(target, 0o644)
    return directory


def certificate_subject(cert: Path) -> str:
    """`openssl x509 -subject` output for error messages and assertions."""
    executable = shutil.which("openssl")
    if executable is None:
        raise CertificateError("the `openssl` command is required")
    done = subprocess.run(
        [executable, "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", str(cert)],
        capture_output=True, text=True, timeout=OPENSSL_TIMEOUT_S, check=True,
    )  # fmt: skip
    return done.stdout.strip().removeprefix("subject=").strip()
