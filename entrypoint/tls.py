"""SSL-bump CA material: validate the mounted TLS secret, merge it for Squid, init the cert DB.

Key material is only ever read and written as bytes; nothing here logs file contents.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import ssl
import time
from pathlib import Path

from entrypoint.mounted_files import TLS_SIZE_LIMIT, FileAbsent, FileProblem, read_bounded
from entrypoint.processes import ChildProcesses, describe_exit
from entrypoint.redact import redact_text
from entrypoint.squid_config import CertDb, write_atomically


_FIRST_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class TlsError(Exception):
    """Missing or unusable CA material; the message names the file and the fix."""


def _refuse_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on a terminal for an encrypted key.
    raise TlsError("encrypted")


def _read(path: Path, what: str, tls_dir: Path) -> bytes:
    try:
        return read_bounded(path, TLS_SIZE_LIMIT)
    except FileAbsent:
        raise TlsError(
            f"SSL-bump is configured but the CA {what} {path} is missing: mount the CA"
            f" certificate and key as a Kubernetes TLS secret at {tls_dir}"
            " (files tls.crt and tls.key)"
        ) from None
    except FileProblem as error:
        raise TlsError(f"cannot use the CA {what}: {error}") from None


def certificate_problems(cert: Path, cert_bytes: bytes, now: float | None = None) -> list[str]:
    """What makes the signing certificate unfit for SSL-bump although Squid may accept it.

    The image has no openssl CLI, so this uses only the ssl module: OpenSSL's own CA check
    (X509_check_ca, counted by cert_store_stats) and the validity dates from
    ssl._ssl._test_decode_cert (private but present since Python 3.0; skipped if absent).
    """
    problems: list[str] = []
    first = _FIRST_PEM_CERT.search(cert_bytes)
    if first is None:
        return problems
    store = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        store.load_verify_locations(cadata=first.group(0).decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        return problems  # load_cert_chain reports unreadable certificates
    if store.cert_store_stats().get("x509_ca", 0) == 0:
        problems.append(
            f"{cert} is not a CA certificate (no basicConstraints CA:TRUE / keyCertSign):"
            " clients will reject the certificates Squid signs with it; mount a CA certificate"
        )
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return problems
    try:
        fields = decode(str(cert))
        not_before = ssl.cert_time_to_seconds(fields["notBefore"])
        not_after = ssl.cert_time_to_seconds(fields["notAfter"])
    except (ssl.SSLError, OSError, KeyError, ValueError):
        return problems
    now = time.time() if now is None else now
    if not_after < now:
        problems.append(
            f"{cert} expired on {fields['notAfter']}: clients will reject the certificates"
            " Squid signs with it; renew the CA"
        )
    elif not_before > now:
        problems.append(f"{cert} is not valid before {fields['notBefore']}: check the CA or the clock")
    return problems


def validate_ca_pair(cert: Path, key: Path, tls_dir: Path) -> tuple[bytes, bytes]:
    """Both files exist and form a matching certificate/private key pair; returns their bytes.

    A pair Squid can use but clients will not trust (not a CA, expired) is logged as a warning.
    """
    cert_bytes = _read(cert, "certificate", tls_dir)
    key_bytes = _read(key, "private key", tls_dir)
    if b"-----BEGIN CERTIFICATE-----" not in cert_bytes:
        raise TlsError(f"{cert} does not contain a PEM certificate (-----BEGIN CERTIFICATE-----)")
    if b"PRIVATE KEY-----" not in key_bytes:
        raise TlsError(f"{key} does not contain a PEM private key (-----BEGIN PRIVATE KEY-----)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_refuse_passphrase)
    except TlsError:
        raise TlsError(
            f"{key} is encrypted with a passphrase; Squid needs an unencrypted CA key"
        ) from None
    except ssl.SSLError as error:
        reason = error.reason or "invalid"
        if "MISMATCH" in reason.upper():
            raise TlsError(
                f"{key} is not the private key of the certificate in {cert}"
                " (key values mismatch): mount a matching certificate/key pair"
            ) from None
        raise TlsError(
            f"{cert} / {key} cannot be loaded as a certificate/key pair ({reason})"
        ) from None
    for problem in certificate_problems(cert, cert_bytes):
        logging.getLogger("cephaloproxy").warning("SSL-bump CA: %s", problem)
    return cert_bytes, key_bytes


def merge_ca_pem(cert_bytes: bytes, key_bytes: bytes, target: Path) -> None:
    """Certificate then key in one file with mode 0600, replaced atomically."""
    if not cert_bytes.endswith(b"\n"):
        cert_bytes += b"\n"
    write_atomically(target, cert_bytes + key_bytes, 0o600)


async def ensure_cert_db(
    children: ChildProcesses, certgen_bin: Path, db: CertDb, log: logging.Logger
) -> None:
    """Create the certificate DB with security_file_certgen when it does not exist yet.

    It is built under a temporary name and renamed, so an interrupted start leaves no
    half-initialised DB for the next start to trust.
    """
    if db.path.exists():
        log.info("SSL certificate DB %s already exists", db.path)
        return
    temporary = db.path.with_name(f".{db.path.name}.init-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    log.info("Initialising SSL certificate DB %s (%s)", db.path, db.size)
    argv = [str(certgen_bin), "-c", "-s", str(temporary), "-M", db.size]
    try:
        returncode, output = await children.run(argv, timeout=120)
    except OSError as error:
        raise TlsError(f"cannot run {certgen_bin}: {error.strerror}") from None
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if returncode != 0:
        shutil.rmtree(temporary, ignore_errors=True)
        raise TlsError(
            f"{certgen_bin} failed to initialise {db.path} ({describe_exit(returncode)}):"
            f" {redact_text(output.strip())}"
        )
    os.rename(temporary, db.path)
