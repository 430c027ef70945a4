"""The TLS secret and the cert DB under attack: a secret swapped while it is read, a FIFO or a
symlink planted among the DB's leaves (real files, real Squid, real security_file_certgen)."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from entrypoint import tls
from entrypoint.testing import (  # noqa: F401 - fixtures
    Launcher,
    Workspace,
    certgen_bin,
    install_ca,
    launch,
    make_ca,
    make_server_cert,
    openssl,
    python_for_child,
    squid_available,
    ssl_bump_config,
    workspace,
)

pytestmark = pytest.mark.skipif(
    openssl() is None, reason="the openssl CLI is needed to make test CAs"
)


def _pair_matches(cert: bytes, key: bytes) -> bool:
    """Whether OpenSSL accepts these bytes (loaded from memory) as a certificate and its key."""
    cert_fd, key_fd = os.memfd_create("cert"), os.memfd_create("key")
    try:
        os.write(cert_fd, cert)
        os.write(key_fd, key)
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}"
        )
    except ssl.SSLError:
        return False
    finally:
        os.close(cert_fd)
        os.close(key_fd)
    return True


def _secret_tree(tls_dir: Path, tmp_path: Path) -> None:
    """A Kubernetes TLS secret volume: tls.crt -> ..data/tls.crt, ..data -> ..A (CA 1) or ..B (CA 2)."""
    for name, subject in (("..A", "Race CA 1"), ("..B", "Race CA 2")):
        cert, key = make_ca(tmp_path, subject)
        (tls_dir / name).mkdir(parents=True)
        (tls_dir / name / "tls.crt").write_bytes(cert.read_bytes())
        (tls_dir / name / "tls.key").write_bytes(key.read_bytes())
    os.symlink("..A", tls_dir / "..data")
    for name in ("tls.crt", "tls.key"):
        os.symlink(f"..data/{name}", tls_dir / name)


def test_validate_ca_pair_returns_a_matching_pair_while_the_secret_is_swapped(
    tmp_path: Path,
) -> None:
    # Was: the bytes were read, then the pair was checked again by path; a swap between the
    # reads passed CA 1's certificate with CA 2's key on to the merge (Squid FATALs on it).
    tls_dir = tmp_path / "tls"
    _secret_tree(tls_dir, tmp_path)
    stop = threading.Event()
    swaps = [0]

    def swapper() -> None:
        current = "..A"
        while not stop.is_set():
            current = "..B" if current == "..A" else "..A"
            os.symlink(current, tls_dir / "..tmp")
            os.rename(tls_dir / "..tmp", tls_dir / "..data")  # what the kubelet does
            swaps[0] += 1
            time.sleep(0.0002)

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    returned = refused = mismatched = 0
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and returned + refused < 4000 and not mismatched:
            try:
                cert, key = tls.validate_ca_pair(tls_dir / "tls.crt", tls_dir / "tls.key", tls_dir)
            except tls.TlsError:
                refused += 1  # a reload skipped: fine
                continue
            returned += 1
            mismatched += not _pair_matches(cert, key)
    finally:
        stop.set()
        thread.join(10)
    print(
        f"swaps {swaps[0]}, pairs returned {returned}, refused {refused}, mismatched {mismatched}"
    )
    assert mismatched == 0, (
        f"validate_ca_pair returned a certificate and a key that do not match (try {returned + refused},"
        f" {swaps[0]} swaps)"
    )
    assert returned > 0
    assert swaps[0] > 100, "the swapper did not run"


_RECHECK = textwrap.dedent("""
    import asyncio, logging, sys
    from pathlib import Path
    from entrypoint import tls
    from entrypoint.config_steps import in_worker
    from entrypoint.processes import ChildProcesses
    from entrypoint.squid_config import CertDb

    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="[%(levelname)s] %(message)s")
    log = logging.getLogger("cephaloproxy")
    db, certgen, ca = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]).read_bytes()

    async def main() -> None:
        children = ChildProcesses(log)
        children.install()
        await tls.ensure_cert_db(children, certgen, CertDb(db, "4MB"), tls.ca_fingerprint(ca), log)
        print("READY", flush=True)
        sys.stdin.readline()  # the test plants its entries now
        rebuilt = await tls.recheck_cert_db(children, certgen, CertDb(db, "4MB"), ca, log, set(), in_worker)
        print("REBUILT" if rebuilt else "KEPT", flush=True)

    asyncio.run(main())
    print("EXITING", flush=True)
""")


def test_a_fifo_or_a_symlink_among_the_leaves_does_not_hang_the_recheck(tmp_path: Path) -> None:
    # Was: the recheck opened every certs/*.pem by path with a blocking read: a FIFO (Squid's
    # user can make one there) hung it with the rebuild lock held, /dev/zero read forever, and
    # the executor thread kept the process from exiting.
    if not os.access(certgen_bin(), os.X_OK):
        pytest.skip(f"security_file_certgen not found at {certgen_bin()}")
    ca_cert, ca_key = make_ca(tmp_path, "Recheck CA")
    leaf_cert, leaf_key = make_server_cert(tmp_path, ca_cert, ca_key, "leaf.cephaloproxy.test")
    db = tmp_path / "ssl_db"
    child = subprocess.Popen(
        [python_for_child(), "-c", _RECHECK, str(db), str(certgen_bin()), str(ca_cert)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        seen = ""
        while not seen.endswith("READY\n"):  # security_file_certgen -c has made the DB
            line = child.stdout.readline()
            assert line, seen
            seen += line
        certs = db / "certs"
        os.mkfifo(certs / "0FFF.pem")
        os.symlink("/dev/zero", certs / "0FFE.pem")
        (certs / "0FFD.pem").write_bytes(leaf_cert.read_bytes() + leaf_key.read_bytes())
        child.stdin.write("go\n")
        child.stdin.flush()
        try:
            output, _ = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            output, _ = child.communicate(timeout=10)
            raise AssertionError(
                f"the recheck did not finish within 30 s (a FIFO or /dev/zero read?): {output}"
            )
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert child.returncode == 0, output
    assert "KEPT" in output and "EXITING" in output, output
    assert "2 entry(ies) in certs/ skipped" in output, output
    assert "0FFF.pem" in output or "0FFE.pem" in output, output


def test_a_fifo_among_the_leaves_neither_blocks_the_next_rotation_nor_sigterm(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
    workspace.custom_config.write_text(ssl_bump_config(workspace))
    ca1, ca2 = make_ca(tmp_path, "FIFO CA 1"), make_ca(tmp_path, "FIFO CA 2")
    install_ca(workspace, *ca1)
    run = launch()
    run.wait_ready()
    install_ca(workspace, *ca2)
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(r"Squid reconfigured")
    fifo = workspace.runtime_dir("lib") / "ssl_db" / "certs" / "0FFF.pem"
    os.mkfifo(fifo)  # before the first recheck (2 s after the reconfigure)
    time.sleep(4)
    install_ca(workspace, *ca1)  # the next rotation needs the rebuild lock
    before = run.stdout.count("Squid reconfigured")
    run.process.send_signal(signal.SIGHUP)
    try:
        deadline = time.monotonic() + 30
        while run.stdout.count("Squid reconfigured") == before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert run.stdout.count("Squid reconfigured") > before, (
            "the rotation after the FIFO never finished:\n" + run.stdout[-3000:]
        )
        assert "entry(ies) in certs/ skipped" in run.stdout
        run.process.terminate()
        assert run.wait_exit(40) == 0
    finally:
        if run.process.poll() is None and fifo.exists():
            os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))  # let a hung reader go


def test_sighups_racing_a_secret_update_never_hand_squid_a_mismatched_pair(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
    # Was: a reload merged CA 1's certificate with CA 2's key now and then; Squid FATALed on
    # it and the container exited 1.
    workspace.custom_config.write_text(ssl_bump_config(workspace))
    workspace.make_dir(workspace.tls_dir, 0o775)
    _secret_tree(workspace.tls_dir, tmp_path)
    for directory in ("..A", "..B"):
        os.chmod(workspace.tls_dir / directory, 0o775)
        for name in ("tls.crt", "tls.key"):
            os.chmod(workspace.tls_dir / directory / name, 0o664)
    run = launch()
    run.wait_ready()
    merged = workspace.runtime_dir("lib") / "squid-ca.pem"
    stop = threading.Event()

    def swapper() -> None:
        current = "..A"
        while not stop.is_set():
            current = "..B" if current == "..A" else "..A"
            os.symlink(current, workspace.tls_dir / "..tmp")
            os.rename(workspace.tls_dir / "..tmp", workspace.tls_dir / "..data")
            time.sleep(0.0003)

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    try:
        for attempt in range(200):
            before = run.output.count("Squid reconfigured") + run.output.count("Reload skipped")
            run.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while (
                run.output.count("Squid reconfigured") + run.output.count("Reload skipped")
                == before
                and run.process.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            assert run.process.poll() is None, (
                f"the entrypoint exited at reload {attempt}:\n{run.output[-3000:]}"
            )
            pem = merged.read_bytes()
            assert _pair_matches(pem, pem), (
                f"reload {attempt} merged a certificate and a key that do not match"
            )
    finally:
        stop.set()
        thread.join(10)
    reconfigured, skipped = (
        run.output.count("Squid reconfigured"),
        run.output.count("Reload skipped"),
    )
    print(f"reconfigured {reconfigured}, skipped {skipped}")
    assert reconfigured > 0
    run.process.terminate()
    assert run.wait_exit(40) == 0
