"""SSL-bump CA material: validate the mounted TLS secret, merge it for Squid, init the cert DB.

Key material is only ever read and written as bytes; nothing here logs file contents.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import ssl
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from entrypoint.log_text import escape_controls
from entrypoint.mounted_files import (
    TLS_SIZE_LIMIT,
    FileAbsent,
    FileProblem,
    describe_kind,
    read_bounded,
)
from entrypoint.processes import ChildProcesses, describe_exit
from entrypoint.redact import redact_text
from entrypoint.squid_config import CertDb, write_atomically

_FIRST_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class TlsError(Exception):
    """Missing or unusable CA material; the message names the file and the fix."""


def _refuse_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on a terminal for an encrypted key.
    raise TlsError("encrypted")


@contextlib.contextmanager
def in_memory(data: bytes, name: str) -> Iterator[str]:
    """A path (/proc/self/fd/N) to an anonymous in-memory file holding `data`, for the ssl
    calls that only take paths: they load exactly these bytes, never a file that may have
    changed since it was read, and no key material touches a disk."""
    descriptor = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        yield f"/proc/self/fd/{descriptor}"
    finally:
        os.close(descriptor)


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
        with in_memory(first.group(0), "ca-cert") as loaded:
            fields = decode(loaded)
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
        problems.append(
            f"{cert} is not valid before {fields['notBefore']}: check the CA or the clock"
        )
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
        # The bytes read above, not the paths: a secret update between the reads and this
        # check (the ..data symlink swap) must not pass one pair and merge another.
        with in_memory(cert_bytes, "ca-cert") as cert_in, in_memory(key_bytes, "ca-key") as key_in:
            context.load_cert_chain(cert_in, key_in, password=_refuse_passphrase)
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


# security_file_certgen's DB layout, and the file beside it naming the CA its leaves are from.
_DB_FILES = ("index.txt", "size")
_DB_DIRS = ("certs",)
CA_MARKER = "cephaloproxy-ca.sha256"


def ca_fingerprint(cert_bytes: bytes) -> str:
    """sha256 (hex) of the DER of the signing certificate: the first one in tls.crt."""
    first = _FIRST_PEM_CERT.search(cert_bytes)
    if first is None:
        raise TlsError("the CA certificate has no PEM certificate block")
    try:
        der = ssl.PEM_cert_to_DER_cert(first.group(0).decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise TlsError("the CA certificate's PEM block is not valid base64") from None
    return hashlib.sha256(der).hexdigest()


def _read_marker(path: Path) -> str | None:
    try:
        return read_bounded(path, 1024).decode("ascii", errors="replace").strip()
    except FileProblem:
        return None


def rebuild_reason(path: Path, fingerprint: str) -> str | None:
    """Why the DB at `path` must be (re)built for the CA `fingerprint`, or None when it is fit.

    TlsError when `path` exists but is not a directory (a file cannot be replaced safely).
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "it does not exist yet"
    except OSError as error:
        raise TlsError(f"SSL certificate DB {path} cannot be checked: {error.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        kind = "a regular file" if stat.S_ISREG(info.st_mode) else describe_kind(info.st_mode)
        raise TlsError(
            f"SSL certificate DB {path} is {kind} where a directory is"
            " needed: remove it (the entrypoint creates the DB) or point sslcrtd_program -s elsewhere"
        )
    missing = [name for name in _DB_FILES if not (path / name).is_file()]
    missing += [f"{name}/" for name in _DB_DIRS if not (path / name).is_dir()]
    if missing:
        return f"it is empty or incomplete (no {', '.join(missing)})"
    recorded = _read_marker(path / CA_MARKER)
    if recorded is None:
        return "the CA it was made for is not recorded (made by an older image or by hand)"
    if recorded != fingerprint:
        return "it was made for another CA (the TLS secret was rotated)"
    return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _in_place(path: Path) -> bool:
    """Replace the DB's entries inside `path` (a mount point, or a dir holding other files)
    instead of renaming a new DB over it."""
    if not path.is_dir():
        return False
    known = {*_DB_FILES, *_DB_DIRS, CA_MARKER}
    return os.path.ismount(path) or any(
        name not in known and not name.startswith(".cephaloproxy-") for name in os.listdir(path)
    )


async def _certgen_create(
    children: ChildProcesses, certgen_bin: Path, db: CertDb, target: Path
) -> None:
    """`security_file_certgen -c` into the fresh directory `target` (removed on failure)."""
    shutil.rmtree(target, ignore_errors=True)
    argv = [str(certgen_bin), "-c", "-s", str(target), "-M", db.size]
    try:
        returncode, output = await children.run(argv, timeout=120)
    except OSError as error:
        raise TlsError(f"cannot run {certgen_bin}: {error.strerror}") from None
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    if returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise TlsError(
            f"{certgen_bin} failed to initialise {db.path} ({describe_exit(returncode)}):"
            f" {redact_text(output.strip())}"
        )


def _swap_beside(new: Path, path: Path) -> None:
    """Rename the complete DB `new` to `path`; an old DB there is renamed away first, then removed.

    Between the two renames `path` is absent (a helper then generates without storing); it
    never holds a half-made DB.
    """
    if not path.exists():
        os.rename(new, path)
        return
    old = path.with_name(f".{path.name}.old-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(path, old)
    os.rename(new, path)
    shutil.rmtree(old, ignore_errors=True)


def _swap_in_place(new: Path, path: Path) -> None:
    """Move the entries of the DB `new` (a dir inside `path`) over those of `path`, marker last."""
    _remove(path / CA_MARKER)  # from here on the DB is not trusted
    for name in (*_DB_DIRS, *_DB_FILES):
        _remove(path / name)
        os.rename(new / name, path / name)
    os.rename(new / CA_MARKER, path / CA_MARKER)
    shutil.rmtree(new, ignore_errors=True)


def _clean_leftovers(path: Path) -> None:
    """Temporary DBs of an interrupted earlier (re)build (PID 1 has the same pid every start)."""
    for pattern in (f".{path.name}.init-*", f".{path.name}.old-*"):
        for leftover in path.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)
    if path.is_dir():
        for leftover in path.glob(".cephaloproxy-init-*"):
            shutil.rmtree(leftover, ignore_errors=True)


# DBs (real paths) rebuilt and not rechecked since (config_steps.recheck_cert_dbs, after a
# reload; a reload skipped after the rebuild leaves its DB here for the next one). One rebuild
# runs at a time.
REBUILT: set[Path] = set()
_REBUILD_LOCK = asyncio.Lock()
# Longest wait for one pass over a DB's new leaves (one handshake each); the leaves checked
# by then count as checked, the next pass goes on with the rest.
RECHECK_TIMEOUT = 60.0


async def ensure_cert_db(
    children: ChildProcesses, certgen_bin: Path, db: CertDb, fingerprint: str, log: logging.Logger
) -> bool:
    """Make sure the certificate DB exists, is complete and was made for the CA `fingerprint`;
    returns whether it was (re)built.

    Otherwise a new DB is made with security_file_certgen -c in a fresh directory, the CA's
    fingerprint is recorded in it (CA_MARKER), and it replaces the old one by rename: leaves
    signed by a rotated-out CA are never served again, and an interrupted (re)build leaves no
    half-made DB that the next start would trust.
    """
    async with _REBUILD_LOCK:
        path = Path(os.path.realpath(db.path))  # a symlinked DB is rebuilt where it really is
        _clean_leftovers(
            path
        )  # also beside a fit DB: a rebuild stopped before removing the old one
        reason = rebuild_reason(path, fingerprint)
        if reason is None:
            log.info(
                "SSL certificate DB %s was made for this CA (sha256 %s)", db.path, fingerprint[:16]
            )
            return False
        log.info("Initialising SSL certificate DB %s (%s): %s", db.path, db.size, reason)
        await _rebuild(children, certgen_bin, db, path, fingerprint)
        return True


async def _rebuild(
    children: ChildProcesses, certgen_bin: Path, db: CertDb, path: Path, fingerprint: str
) -> None:
    try:
        in_place = _in_place(path)
        if in_place:
            new = path / f".cephaloproxy-init-{os.getpid()}"
        else:
            new = path.with_name(f".{path.name}.init-{os.getpid()}")
        await _certgen_create(children, certgen_bin, db, new)
        write_atomically(new / CA_MARKER, f"{fingerprint}\n".encode("ascii"), 0o644)
        (_swap_in_place if in_place else _swap_beside)(new, path)
    except OSError as error:
        raise TlsError(
            f"cannot (re)build the SSL certificate DB {db.path}: {error.strerror}"
            f"{f' ({error.filename})' if error.filename else ''}: make its directory writable"
        ) from None
    REBUILT.add(path)


def _pump(source: ssl.MemoryBIO, target: ssl.MemoryBIO) -> None:
    data = source.read()
    if data:
        target.write(data)


def leaf_is_from(entry: bytes, ca_pem: str) -> bool:
    """Whether the leaf in a DB entry's bytes (certificate, key, original certificate) chains to the CA
    `ca_pem`: a TLS handshake in memory, the leaf's own key on one side and only the CA trusted
    on the other (the ssl module verifies no certificate otherwise). Expired counts as from it."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    try:
        with in_memory(entry, "leaf") as loaded:
            server.load_cert_chain(loaded)
        client.load_verify_locations(cadata=ca_pem)
    except (ssl.SSLError, OSError, ValueError):
        return False  # unreadable: not a leaf this CA can vouch for
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client_side = client.wrap_bio(bios[0], bios[1])
    server_side = server.wrap_bio(bios[2], bios[3], server_side=True)
    for _ in range(10):  # TLS 1.3 needs two round trips, 1.2 three
        try:
            client_side.do_handshake()
            return True  # the client verified the leaf against the CA
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLCertVerificationError as error:
            return error.verify_code in (9, 10)  # X509_V_ERR_CERT_NOT_YET_VALID, _HAS_EXPIRED
        except ssl.SSLError:
            return False
        _pump(bios[1], bios[2])
        try:
            server_side.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            return False
        _pump(bios[3], bios[0])
    return False


def foreign_leaves(
    path: Path, ca_pem: str, checked: set[str], cancel: threading.Event | None = None
) -> tuple[int, list[str]]:
    """How many leaves in the DB at `path` do not chain to the CA `ca_pem`, and why the entries
    that are no regular file of at most TLS_SIZE_LIMIT bytes were skipped (Squid's user can
    plant a FIFO or a symlink there: read without blocking, never followed). Entries named in
    `checked` are skipped, the others added (each leaf file has a unique serial number as its
    name). Blocking: run it in a thread; stops early once `cancel` is set."""
    try:
        entries = [entry for entry in (path / "certs").iterdir() if entry.name.endswith(".pem")]
    except OSError:
        return 0, []
    foreign = 0
    skipped: list[str] = []
    for entry in entries:
        if cancel is not None and cancel.is_set():
            break
        if entry.name not in checked:
            checked.add(entry.name)
            try:
                leaf = read_bounded(entry, TLS_SIZE_LIMIT, follow_symlinks=False)
            except FileAbsent:
                continue  # Squid removed it meanwhile
            except FileProblem as problem:
                skipped.append(str(problem))
                continue
            foreign += not leaf_is_from(leaf, ca_pem)
    return foreign, skipped


# config_steps.in_worker: runs job(cancel) in a daemon thread, waits at most `timeout` seconds.
Worker = Callable[
    [Callable[[threading.Event], tuple[int, list[str]]], str, float],
    Awaitable[tuple[int, list[str]]],
]


async def recheck_cert_db(
    children: ChildProcesses,
    certgen_bin: Path,
    db: CertDb,
    ca_cert: bytes,
    log: logging.Logger,
    checked: set[str],
    in_worker: Worker,
) -> bool:
    """After Squid reconfigured: rebuild a DB (re)built for this CA again if leaves of another CA
    reached it meanwhile (connections bumped by the previous config store theirs in it too).

    Returns whether it was rebuilt. A DB not made for this CA is left to the next reload.
    `checked`: the leaves found fine by earlier rechecks of this DB (updated). The leaves are
    read in `in_worker`: not asyncio.to_thread, whose executor threads are joined at exit, so
    nothing here can keep PID 1 from exiting or hold the rebuild lock without bound.
    """
    fingerprint = ca_fingerprint(ca_cert)
    first = _FIRST_PEM_CERT.search(ca_cert)
    assert first is not None  # ca_fingerprint found it
    async with _REBUILD_LOCK:
        path = Path(os.path.realpath(db.path))
        if rebuild_reason(path, fingerprint) is not None:
            return False
        ca_pem = first.group(0).decode("ascii")
        foreign, skipped = await in_worker(
            lambda cancel: foreign_leaves(path, ca_pem, checked, cancel),
            f"checking the leaves in {db.path}",
            RECHECK_TIMEOUT,
        )
        if skipped:
            log.warning(
                "SSL certificate DB %s: %d entry(ies) in certs/ skipped, e.g. %s; remove them",
                db.path,
                len(skipped),
                escape_controls(skipped[0]),
            )
        if not foreign:
            return False
        log.warning(
            "SSL certificate DB %s: %d certificate(s) signed by the previous CA were stored during"
            " Squid's reconfigure; rebuilding it",
            db.path,
            foreign,
        )
        await _rebuild(children, certgen_bin, db, path, fingerprint)
        REBUILT.discard(path)  # this recheck has it in hand
        checked.clear()
        return True
