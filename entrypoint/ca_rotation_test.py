"""SSL-bump CA rotation and the certificate DB: leaves from a rotated-out CA are never served again,
and an empty, incomplete or foreign DB is rebuilt (real Squid, real security_file_certgen)."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from entrypoint.squid_config import CertDb
from tests.entrypoint.testing import (
    ORIGIN_HOSTNAME,
    EntrypointRun,
    Launcher,
    Workspace,
    assert_no_key_material,
    certgen_bin,
    install_ca,
    make_ca,
    make_server_cert,
    openssl,
    python_for_child,
    ssl_bump_config,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    openssl() is None, reason="the openssl CLI is needed to make test CAs"
)

SECOND_HOSTNAME = "second-origin.cephaloproxy.test"
OLD_CA, NEW_CA = "CephaloProxy Bump CA 1", "CephaloProxy Bump CA 2 (rotated in)"


def fingerprint(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


class StallingTlsOrigin:
    """An HTTPS origin that can hold one connection's TLS handshake for a while (a slow origin)."""

    def __init__(self, body: str, cert: Path, key: Path) -> None:
        self.body = body
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stall_next = False  # hold the next connection's handshake until `release` is set
        self.stalled = threading.Event()  # set once a held connection has arrived
        self.release = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            stall, self.stall_next = self.stall_next, False
            threading.Thread(target=self._answer, args=(connection, stall), daemon=True).start()

    def _answer(self, connection: socket.socket, stall: bool) -> None:
        with connection:
            if stall:
                self.stalled.set()
                self.release.wait(60)
            connection.settimeout(30)
            try:
                with self.context.wrap_socket(connection, server_side=True) as tls:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        chunk = tls.recv(4096)
                        if not chunk:
                            return
                        request += chunk
                    payload = self.body.encode()
                    tls.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-store\r\n"
                        + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                        + payload
                    )
            except (OSError, ssl.SSLError):
                return

    def close(self) -> None:
        self.release.set()
        self.listener.close()


class Origins:
    """Two HTTPS origins (hosts A and B) with certificates from a CA Squid trusts."""

    def __init__(self, workspace: Workspace, directory: Path) -> None:
        ca, ca_key = make_ca(directory, "Origin CA")
        shutil.copy(ca, workspace.etc / "origin-ca.crt")
        os.chmod(workspace.etc / "origin-ca.crt", 0o664)
        workspace.write_custom_config(ssl_bump_config(workspace, workspace.etc / "origin-ca.crt"))
        (workspace.etc / "hosts").write_text(f"127.0.0.1 {ORIGIN_HOSTNAME} {SECOND_HOSTNAME}\n")
        self.servers: dict[str, StallingTlsOrigin] = {}
        self.keys: list[Path] = []
        for host in (ORIGIN_HOSTNAME, SECOND_HOSTNAME):
            cert, key = make_server_cert(directory, ca, ca_key, host)
            self.servers[host] = StallingTlsOrigin(f"{host} says {uuid.uuid4()}", cert, key)
            self.keys.append(key)

    def close(self) -> None:
        for server in self.servers.values():
            server.close()


@pytest.fixture
def origins(workspace: Workspace, tmp_path: Path) -> Iterator[Origins]:
    created = Origins(workspace, tmp_path)
    try:
        yield created
    finally:
        created.close()


def fetch(
    workspace: Workspace, origins: Origins, host: str, trusted_ca: Path
) -> tuple[str, int, str]:
    """GET through the proxy's CONNECT to `host`, verifying the leaf's chain against `trusted_ca`
    alone (ssl.SSLCertVerificationError otherwise): (issuer CN, status, body)."""
    context = ssl.create_default_context(cafile=str(trusted_ca))
    context.check_hostname = False
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    connection = http.client.HTTPSConnection(
        "127.0.0.1", workspace.squid_port, context=context, timeout=30
    )
    connection.set_tunnel(host, origins.servers[host].port)
    try:
        connection.request("GET", "/rotated")
        peer: Any = connection.sock.getpeercert()  # typeshed: a union of the dict and binary forms
        issuer = dict(item[0] for item in peer["issuer"])
        response = connection.getresponse()
        return issuer["commonName"], response.status, response.read().decode()
    finally:
        connection.close()


def fetch_verified(
    workspace: Workspace, origins: Origins, host: str, trusted_ca: Path, timeout: float = 60
) -> tuple[str, int, str]:
    """`fetch` until the leaf verifies against `trusted_ca` and the origin answers (Squid
    reconfigures in the background: just after, its first request may get a 503)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = fetch(workspace, origins, host, trusted_ca)
            if result[1] == 200 or time.monotonic() > deadline:
                return result
        except (ssl.SSLError, OSError, http.client.HTTPException) as error:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{host}: no leaf verifying against {trusted_ca.name} within {timeout} s: {error!r}"
                ) from None
        time.sleep(0.5)


def assert_new_ca_everywhere(
    workspace: Workspace, origins: Origins, new_cert: Path, run: EntrypointRun
) -> None:
    for host in (ORIGIN_HOSTNAME, SECOND_HOSTNAME):
        issuer, status, body = fetch_verified(workspace, origins, host, new_cert)
        assert issuer == NEW_CA, f"{host}: leaf issued by {issuer}"
        assert (status, body) == (200, origins.servers[host].body), (
            run.output[-3000:] + body[-1500:]
        )
    db = workspace.runtime_dir("lib") / "ssl_db"
    assert (db / "cephaloproxy-ca.sha256").read_text().strip() == fingerprint(new_cert)


def start_with_host_a_bumped(
    workspace: Workspace, launch: Launcher, origins: Origins, tmp_path: Path
) -> tuple[EntrypointRun, Path, Path]:
    """The entrypoint started with the old CA, and host A bumped: (run, old cert, old key)."""
    old_cert, old_key = make_ca(tmp_path, OLD_CA)
    install_ca(workspace, old_cert, old_key)
    run = launch()
    run.wait_ready()
    assert fetch(workspace, origins, ORIGIN_HOSTNAME, old_cert)[:2] == (OLD_CA, 200)
    return run, old_cert, old_key


def test_sighup_with_a_rotated_ca_re_signs_hosts_bumped_before(
    workspace: Workspace, launch: Launcher, origins: Origins, tmp_path: Path
) -> None:
    run, old_cert, old_key = start_with_host_a_bumped(workspace, launch, origins, tmp_path)
    # A straggler: host B's origin holds its handshake across the reload, so Squid signs B's
    # leaf with the previous config's CA after the new DB is in place and stores it there.
    origins.servers[SECOND_HOSTNAME].stall_next = True
    straggler: list[object] = []
    thread = threading.Thread(
        target=lambda: straggler.append(_attempt(workspace, origins, SECOND_HOSTNAME, old_cert))
    )
    thread.start()
    assert origins.servers[SECOND_HOSTNAME].stalled.wait(30)

    new_cert, new_key = make_ca(tmp_path, NEW_CA)
    install_ca(workspace, new_cert, new_key)
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(r"Squid reconfigured")
    assert "it was made for another CA (the TLS secret was rotated)" in run.stdout
    origins.servers[SECOND_HOSTNAME].release.set()  # the new DB is in place, Squid was sent SIGHUP
    thread.join(60)
    assert straggler == [(OLD_CA, 200)], straggler  # Squid finishes it with the previous config
    run.wait_for_output(
        r"\[WARNING\] SSL certificate DB \S+: 1 certificate\(s\) signed by the previous CA were stored",
        75,
    )
    # Was: host A kept its leaf from the old CA (only host B got one from the new CA).
    assert_new_ca_everywhere(workspace, origins, new_cert, run)
    with pytest.raises(ssl.SSLCertVerificationError):
        fetch(workspace, origins, ORIGIN_HOSTNAME, old_cert)
    run.process.terminate()
    assert run.wait_exit(60) == 0
    assert_no_key_material(run.output, old_key, new_key, *origins.keys)


def _attempt(workspace: Workspace, origins: Origins, host: str, trusted_ca: Path) -> object:
    try:
        return fetch(workspace, origins, host, trusted_ca)[:2]
    except (ssl.SSLError, OSError, http.client.HTTPException) as error:
        return error


def test_sighup_rotation_with_bumping_at_step_1_warns_that_squid_keeps_leaves_in_memory(
    workspace: Workspace, launch: Launcher, origins: Origins, tmp_path: Path
) -> None:
    # Squid 7.7 keeps its in-memory certificate cache across a reconfigure, and uses it when it
    # bumps at step 1: host A keeps its old-CA leaf there whatever the DB holds.
    workspace.custom_config.write_text(
        workspace.custom_config.read_text().replace("ssl_bump peek step1\n", "")
    )
    run, _, _ = start_with_host_a_bumped(workspace, launch, origins, tmp_path)
    new_cert, new_key = make_ca(tmp_path, NEW_CA)
    install_ca(workspace, new_cert, new_key)
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(r"Squid reconfigured")
    run.wait_for_output(
        r"\[WARNING\] SSL-bump: the certificate DB was rebuilt, but the config bumps at step 1 .*"
        r"restart the container after a CA rotation",
        10,
    )
    assert fetch_verified(workspace, origins, SECOND_HOSTNAME, new_cert)[:2] == (NEW_CA, 200)


def stopped_after_host_a_bumped(
    workspace: Workspace, launch: Launcher, origins: Origins, tmp_path: Path
) -> tuple[Path, Path]:
    """A first start with the old CA that bumped host A, stopped: (old cert, old key)."""
    first, old_cert, old_key = start_with_host_a_bumped(workspace, launch, origins, tmp_path)
    first.process.terminate()
    assert first.wait_exit(60) == 0
    return old_cert, old_key


def test_restart_with_a_kept_ssl_db_and_a_new_ca_re_signs_hosts_bumped_before(
    workspace: Workspace, launch: Launcher, origins: Origins, tmp_path: Path
) -> None:
    _, old_key = stopped_after_host_a_bumped(workspace, launch, origins, tmp_path)
    leaves = list((workspace.runtime_dir("lib") / "ssl_db" / "certs").iterdir())
    assert leaves, "host A's leaf was not stored in the DB"

    new_cert, new_key = make_ca(tmp_path, NEW_CA)
    install_ca(workspace, new_cert, new_key)  # the ssl_db (an emptyDir/PVC) is kept
    second = launch()
    second.wait_ready()
    assert_new_ca_everywhere(workspace, origins, new_cert, second)
    second.process.terminate()
    assert second.wait_exit(60) == 0
    assert_no_key_material(second.output, old_key, new_key, *origins.keys)


SLOW_CERTGEN = """#!{python}
import subprocess, sys, time
result = subprocess.run([{real!r}, *sys.argv[1:]])
if "-c" in sys.argv[1:]:
    time.sleep(120)  # the new DB is made; the test stops the container now
sys.exit(result.returncode)
"""


def test_a_rebuild_stopped_midway_leaves_the_old_db_in_place_and_the_next_start_finishes_it(
    workspace: Workspace, launch: Launcher, origins: Origins, tmp_path: Path
) -> None:
    old_cert, _ = stopped_after_host_a_bumped(workspace, launch, origins, tmp_path)
    lib = workspace.runtime_dir("lib")
    db = lib / "ssl_db"
    before = sorted(os.listdir(db / "certs"))
    new_cert, new_key = make_ca(tmp_path, NEW_CA)
    install_ca(workspace, new_cert, new_key)
    slow = workspace.bin / "slow_certgen"
    slow.write_text(SLOW_CERTGEN.format(python=python_for_child(), real=str(certgen_bin())))
    os.chmod(slow, 0o775)
    stopped = launch(workspace.env(CEPHALOPROXY_CERTGEN_BIN=str(slow)))
    assert wait_until(
        lambda: any((p / "index.txt").exists() for p in lib.glob(".ssl_db.init-*")), 60
    ), stopped.output[-3000:]
    os.kill(stopped.pid, signal.SIGKILL)  # the container is killed while the new DB is being made
    stopped.cleanup()
    # The configured path still holds the complete old DB, recorded for the old CA: not trusted
    # for the new one, and never a half-made DB.
    assert (db / "cephaloproxy-ca.sha256").read_text().strip() == fingerprint(old_cert)
    assert sorted(os.listdir(db / "certs")) == before

    again = launch()
    again.wait_ready()
    assert_new_ca_everywhere(workspace, origins, new_cert, again)
    assert [name for name in os.listdir(lib) if name.startswith(".ssl_db")] == []


def _certgen_db(path: Path) -> None:
    subprocess.run(
        [str(certgen_bin()), "-c", "-s", str(path), "-M", "4MB"],
        check=True,
        capture_output=True,
        timeout=60,
    )


DB_STATES = {
    "an empty directory": lambda db: db.mkdir(),
    "no index.txt": lambda db: (_certgen_db(db), (db / "index.txt").unlink()),
    "no size file": lambda db: (_certgen_db(db), (db / "size").unlink()),
    "no certs/": lambda db: (_certgen_db(db), (db / "certs").rmdir()),
    "complete, but made by an older image": _certgen_db,
}


@pytest.mark.parametrize("state", DB_STATES)
def test_an_empty_or_incomplete_ssl_db_is_rebuilt(
    workspace: Workspace, launch: Launcher, origins: Origins, tmp_path: Path, state: str
) -> None:
    # Was: "already exists", then Squid FATAL "sslcrtd_program helpers are crashing too rapidly".
    cert, key = make_ca(tmp_path, OLD_CA)
    install_ca(workspace, cert, key)
    db = workspace.make_dir(workspace.runtime_dir("lib")) / "ssl_db"
    DB_STATES[state](db)
    for path in [db, *db.rglob("*")]:
        os.chmod(path, 0o770 if path.is_dir() else 0o660)
    run = launch()
    run.wait_ready()
    assert fetch(workspace, origins, ORIGIN_HOSTNAME, cert)[:2] == (OLD_CA, 200)
    assert (db / "cephaloproxy-ca.sha256").read_text().strip() == fingerprint(cert)
    assert "helpers are crashing" not in run.output


def test_an_empty_ssl_db_mount_point_is_initialised_in_place(
    workspace: Workspace, launch: Launcher, origins: Origins, tmp_path: Path
) -> None:
    # A volume mounted at the DB path itself cannot be renamed: its content is replaced instead.
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount")
    cert, key = make_ca(tmp_path, OLD_CA)
    install_ca(workspace, cert, key)
    db = workspace.make_dir(workspace.make_dir(workspace.runtime_dir("lib")) / "ssl_db")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "mode=0770,gid=0,size=16m", "tmpfs", str(db)],
        check=True,
        timeout=30,
    )
    try:
        run = launch()
        run.wait_ready()
        assert fetch(workspace, origins, ORIGIN_HOSTNAME, cert)[:2] == (OLD_CA, 200)
        assert os.path.ismount(db)
        assert (db / "cephaloproxy-ca.sha256").read_text().strip() == fingerprint(cert)
        assert sorted(p.name for p in db.iterdir()) == sorted(
            ["certs", "cephaloproxy-ca.sha256", "index.txt", "size"]
        )
        new_cert, new_key = make_ca(tmp_path, NEW_CA)
        install_ca(workspace, new_cert, new_key)
        run.process.send_signal(signal.SIGHUP)
        run.wait_for_output(r"Squid reconfigured")
        assert_new_ca_everywhere(workspace, origins, new_cert, run)
        run.cleanup()
    finally:
        subprocess.run(["umount", "-l", str(db)], capture_output=True, timeout=30)


def test_an_ssl_db_path_that_is_a_file_exits_1_naming_it(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
    cert, key = make_ca(tmp_path, OLD_CA)
    install_ca(workspace, cert, key)
    workspace.write_custom_config(ssl_bump_config(workspace))
    db = workspace.make_dir(workspace.runtime_dir("lib")) / "ssl_db"
    db.write_text("not a DB\n")
    run = launch()
    assert run.wait_exit(60) == 1
    assert (
        f"SSL certificate DB {db} is a regular file where a directory is needed: remove it"
        in run.stderr
    ), run.stderr
    assert db.read_text() == "not a DB\n"
    assert "Starting Squid proxy" not in run.stdout


# -- the DB (re)build on its own, with the real security_file_certgen, for every DB state -----------
ENTRY_KINDS = st.sampled_from(["absent", "file", "dir"])
MARKERS = st.sampled_from(["absent", "right", "other", "garbage", "dir"])


def _make(path: Path, kind: str, content: bytes = b"") -> None:
    if kind == "file":
        path.write_bytes(content)
    elif kind == "dir":
        path.mkdir()


async def _ensure(db: Path, fp: str, log: logging.Logger) -> None:
    from entrypoint import tls
    from entrypoint.processes import ChildProcesses

    children = ChildProcesses(log)
    children.install()
    await tls.ensure_cert_db(children, certgen_bin(), CertDb(db, "4MB"), fp, log)


@pytest.fixture(scope="module")
def certgen_available() -> None:
    if not os.access(certgen_bin(), os.X_OK):
        pytest.skip(f"security_file_certgen not found at {certgen_bin()}")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(
    exists=True,
    index="file",
    size="file",
    certs="dir",
    marker="right",
    foreign=True,
    leftovers=True,
    stored_leaves=2,
)
@example(
    exists=True,
    index="file",
    size="file",
    certs="dir",
    marker="other",
    foreign=False,
    leftovers=False,
    stored_leaves=2,
)
@given(
    exists=st.booleans(),
    index=ENTRY_KINDS,
    size=ENTRY_KINDS,
    certs=ENTRY_KINDS,
    marker=MARKERS,
    foreign=st.booleans(),
    leftovers=st.booleans(),
    stored_leaves=st.integers(0, 3),
)
def test_any_db_state_ends_as_a_complete_db_for_the_current_ca(
    tmp_path_factory: pytest.TempPathFactory,
    certgen_available: None,
    exists: bool,
    index: str,
    size: str,
    certs: str,
    marker: str,
    foreign: bool,
    leftovers: bool,
    stored_leaves: int,
) -> None:
    parent = tmp_path_factory.mktemp("lib")
    db, fp = parent / "ssl_db", hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    if exists:
        db.mkdir()
        _make(db / "index.txt", index)
        _make(db / "size", size, b"0")
        _make(db / "certs", certs)
        if certs == "dir":
            for number in range(stored_leaves):
                (db / "certs" / f"{number:02X}.pem").write_text("a leaf of some CA\n")
        marker_bytes = {"right": fp, "other": "0" * 64, "garbage": "\x1b[31m\x00junk"}.get(
            marker, ""
        ).encode()
        _make(
            db / "cephaloproxy-ca.sha256",
            "absent" if marker == "absent" else "dir" if marker == "dir" else "file",
            marker_bytes,
        )
        if foreign:
            (db / "operator-notes.txt").write_text("keep me\n")
    if leftovers:
        (parent / ".ssl_db.init-1").mkdir()
        (parent / ".ssl_db.old-1-2").mkdir()
        (parent / ".ssl_db.old-1-2" / "index.txt").write_text("")
    was_fit = exists and (index, size, certs, marker) == ("file", "file", "dir", "right")
    before = sorted(os.listdir(db / "certs")) if was_fit else None

    log = logging.getLogger(f"ca-rotation-{uuid.uuid4()}")
    asyncio.run(_ensure(db, fp, log))

    assert (db / "index.txt").is_file() and (db / "size").is_file() and (db / "certs").is_dir()
    assert (db / "cephaloproxy-ca.sha256").read_text().strip() == fp
    if was_fit:
        assert sorted(os.listdir(db / "certs")) == before  # a fit DB is kept with its leaves
    else:
        assert os.listdir(db / "certs") == []  # no leaf of another (or an unknown) CA survives
    if exists and foreign:
        assert (
            db / "operator-notes.txt"
        ).read_text() == "keep me\n"  # only the DB's own entries are replaced
    assert [name for name in os.listdir(parent) if name != "ssl_db"] == []  # no temporary DB left
    assert [name for name in os.listdir(db) if name.startswith(".")] == []
    # Idempotent: a second run finds it fit and changes nothing.
    index_inode = (db / "index.txt").stat().st_ino
    asyncio.run(_ensure(db, fp, log))
    assert (db / "index.txt").stat().st_ino == index_inode


def test_a_kubelet_secret_swap_rotates_the_ca_without_a_signal_and_a_half_pair_is_skipped(
    workspace: Workspace, launch: Launcher, origins: Origins, tmp_path: Path
) -> None:
    """CONFIG_RELOAD=watch with the TLS secret as a kubelet volume (issue 24): no SIGHUP is sent."""
    from tests.entrypoint.kubelet_volume import KubeletVolume

    old_cert, old_key = make_ca(tmp_path, OLD_CA)
    new_cert, new_key = make_ca(tmp_path, NEW_CA)
    secret = KubeletVolume(workspace.tls_dir)
    secret.publish({"tls.crt": old_cert.read_bytes(), "tls.key": old_key.read_bytes()})
    run = launch(workspace.env(CONFIG_RELOAD="watch", CONFIG_WATCH_INTERVAL="0.5"))
    run.wait_ready()
    assert fetch(workspace, origins, ORIGIN_HOSTNAME, old_cert)[:2] == (OLD_CA, 200)
    # A half-rotated secret that stays so (the new certificate, the old key) is refused ...
    secret.publish({"tls.crt": new_cert.read_bytes(), "tls.key": old_key.read_bytes()})
    run.wait_for_output(
        r"Reload skipped, Squid keeps its current config: .*is not the private key",
        60,
        stream="stderr",
    )
    assert "Squid reconfigured" not in run.stdout
    assert fetch(workspace, origins, SECOND_HOSTNAME, old_cert)[:2] == (OLD_CA, 200)
    # ... and the complete pair reaches Squid by itself: every host's leaf is the new CA's.
    secret.publish({"tls.crt": new_cert.read_bytes(), "tls.key": new_key.read_bytes()})
    run.wait_for_output(r"Watch: .*tls\.(crt|key).* changed; reloading the config", 60)
    run.wait_for_output(r"Squid reconfigured", 60)
    assert_new_ca_everywhere(workspace, origins, new_cert, run)
    # One reconfigure (a recheck's WARNING about the DB may follow it: another line).
    reconfigures = re.findall(r"\[INFO\] Squid reconfigured \(PID \d+ kept\)", run.stdout)
    assert len(reconfigures) == 1, run.output
    run.process.terminate()
    assert run.wait_exit(60) == 0
    assert_no_key_material(run.output, old_key, new_key, *origins.keys)
