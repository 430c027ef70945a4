"""End-to-end SSL-bump: CA validation, merged pem, cert DB, and a bumped CONNECT (openssl CLI makes the CAs)."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import ssl
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.entrypoint.harness import search_group
from tests.entrypoint.testing import (
    ORIGIN_HOSTNAME,
    Launcher,
    Workspace,
    assert_no_key_material,
    certgen_bin,
    install_ca,
    make_ca,
    make_server_cert,
    openssl,
    openssl_path,
    python_for_child,
    ssl_bump_config,
    start_local_https_server,
    with_private_shm,
)

pytestmark = pytest.mark.skipif(
    openssl() is None, reason="the openssl CLI is needed to make test CAs"
)


def bump_with_origin(workspace: Workspace, tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A mounted bump CA, an origin certificate from another CA that Squid trusts, and the
    SSL-bump config: (bump cert, bump key, origin cert, origin key)."""
    bump_cert, bump_key = make_ca(tmp_path, "CephaloProxy Test Bump CA")
    origin_ca, origin_ca_key = make_ca(tmp_path, "Origin Test CA")
    origin_cert, origin_key = make_server_cert(tmp_path, origin_ca, origin_ca_key, ORIGIN_HOSTNAME)
    shutil.copy(origin_ca, workspace.etc / "origin-ca.crt")
    os.chmod(workspace.etc / "origin-ca.crt", 0o664)
    install_ca(workspace, bump_cert, bump_key)
    workspace.write_custom_config(ssl_bump_config(workspace, workspace.etc / "origin-ca.crt"))
    return bump_cert, bump_key, origin_cert, origin_key


def bumped_get(
    workspace: Workspace, bump_cert: Path, origin_cert: Path, origin_key: Path
) -> tuple[str, int, str, str]:
    """GET through the proxy's CONNECT, trusting only the bump CA: (issuer CN, status, body, origin's body)."""
    origin = start_local_https_server(f"secret origin {uuid.uuid4()}", origin_cert, origin_key)
    try:
        context = ssl.create_default_context(cafile=str(bump_cert))
        context.check_hostname = False
        context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
        connection = http.client.HTTPSConnection(
            "127.0.0.1", workspace.squid_port, context=context, timeout=60
        )
        connection.set_tunnel(ORIGIN_HOSTNAME, origin.port)  # a name: Squid 5.7 ignores IP SANs
        try:
            connection.request("GET", "/bumped")
            peer: Any = (
                connection.sock.getpeercert()
            )  # typeshed: a union of the dict and binary forms
            issuer = dict(item[0] for item in peer["issuer"])
            response = connection.getresponse()
            body = response.read().decode()
        finally:
            connection.close()
    finally:
        origin.close()
    return issuer["commonName"], response.status, body, origin.body


def test_bumped_connect_presents_a_certificate_from_the_mounted_ca(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
    bump_cert, bump_key, origin_cert, origin_key = bump_with_origin(workspace, tmp_path)

    run = launch()
    run.wait_ready()
    merged = workspace.runtime_dir("lib") / "squid-ca.pem"
    assert stat.S_IMODE(merged.stat().st_mode) == 0o600
    assert merged.read_bytes() == bump_cert.read_bytes() + bump_key.read_bytes()
    assert (workspace.runtime_dir("lib") / "ssl_db").is_dir()

    issuer, status, body, expected = bumped_get(workspace, bump_cert, origin_cert, origin_key)
    # Verification against the bump CA alone succeeded, so Squid re-signed the origin's cert.
    assert issuer == "CephaloProxy Test Bump CA"
    assert (status, body) == (200, expected), run.stderr[-2500:] + body[-1500:]
    run.process.terminate()
    assert run.wait_exit(60) == 0
    assert_no_key_material(run.output, bump_key, origin_key)


@pytest.mark.parametrize("missing", ["tls.crt", "tls.key"])
def test_missing_ca_file_exits_1_naming_it(
    workspace: Workspace, launch: Launcher, tmp_path: Path, missing: str
) -> None:
    cert, key = make_ca(tmp_path, "Bump CA")
    install_ca(
        workspace, None if missing == "tls.crt" else cert, None if missing == "tls.key" else key
    )
    workspace.write_custom_config(ssl_bump_config(workspace))
    run = launch()
    assert run.wait_exit(60) == 1
    assert str(workspace.tls_dir / missing) in run.stderr
    assert "is missing" in run.stderr
    assert not (workspace.runtime_dir("lib") / "squid-ca.pem").exists()
    assert run.descendants_left() == []
    assert_no_key_material(run.output, key)


def test_mismatched_pair_exits_1_naming_both_files(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
    cert, key = make_ca(tmp_path, "Bump CA")
    _, other_key = make_ca(tmp_path, "Other CA")
    install_ca(workspace, cert, other_key)
    workspace.write_custom_config(ssl_bump_config(workspace))
    run = launch()
    assert run.wait_exit(60) == 1
    assert (
        f"{workspace.tls_dir / 'tls.key'} is not the private key of the certificate in"
        in run.stderr
    )
    assert str(workspace.tls_dir / "tls.crt") in run.stderr
    assert not (workspace.runtime_dir("lib") / "squid-ca.pem").exists()
    assert_no_key_material(run.output, key, other_key)


def test_commented_ssl_bump_lines_do_not_require_a_ca(
    workspace: Workspace, launch: Launcher
) -> None:
    config = ssl_bump_config(workspace)
    commented = "\n".join(
        line
        if line.startswith(
            (
                "pid_filename",
                "cache_log",
                "access_log",
                "http_access",
                "visible",
                "shutdown",
                "pinger",
                "netdb",
                "logfile",
            )
        )
        else f"# {line}"
        for line in config.splitlines()
    )
    workspace.write_custom_config(commented + f"\nhttp_port 127.0.0.1:{workspace.squid_port}\n")
    run = launch()
    run.wait_ready()
    assert "SSL-bump configured" not in run.stdout


def test_tls_secret_in_kubernetes_layout_is_used(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
    # kubelet: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/ holding the real files.
    cert, key = make_ca(tmp_path, "Bump CA")
    workspace.make_dir(workspace.tls_dir, 0o775)
    version = workspace.make_dir(workspace.tls_dir / "..2025_01_01_00_00_00.1", 0o775)
    for source, name in ((cert, "tls.crt"), (key, "tls.key")):
        shutil.copy(source, version / name)
        os.chmod(version / name, 0o644)
        (workspace.tls_dir / name).symlink_to(f"..data/{name}")
    (workspace.tls_dir / "..data").symlink_to(version.name)
    workspace.write_custom_config(ssl_bump_config(workspace))
    run = launch()
    run.wait_ready()
    assert (
        workspace.runtime_dir("lib") / "squid-ca.pem"
    ).read_bytes() == cert.read_bytes() + key.read_bytes()


@pytest.mark.parametrize("kind", ["directory", "FIFO", "dangling symlink"])
def test_broken_tls_key_mount_is_named_not_called_missing(
    workspace: Workspace, launch: Launcher, tmp_path: Path, kind: str
) -> None:
    cert, _key = make_ca(tmp_path, "Bump CA")
    install_ca(workspace, cert, None)
    target = workspace.tls_dir / "tls.key"
    if kind == "directory":
        workspace.make_dir(target, 0o775)
    elif kind == "FIFO":
        os.mkfifo(target, 0o664)
    else:
        target.symlink_to("..data/tls.key")
    workspace.write_custom_config(ssl_bump_config(workspace))
    run = launch()
    assert run.wait_exit(60) == 1  # a FIFO read the ordinary way would hang: contract bound
    assert f"{target} is a {kind}" in run.stderr, run.stderr
    assert "is missing" not in run.stderr
    assert not (workspace.runtime_dir("lib") / "squid-ca.pem").exists()


def make_expired_ca(directory: Path) -> tuple[Path, Path]:
    """A CA valid only on 2020-01-01 (`openssl ca` can set past dates; `req -x509` cannot)."""
    work = directory / "expired-ca"
    work.mkdir()
    (work / "index.txt").write_text("")
    (work / "serial").write_text("01\n")
    (work / "ca.cnf").write_text(
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n"
        "default_md = sha256\npolicy = p\nunique_subject = no\nx509_extensions = ext\n"
        "[p]\ncommonName = supplied\n"
        "[ext]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [openssl_path(), *args], cwd=work, check=True, capture_output=True, timeout=120
        )

    run(
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.csr",
        "-subj",
        "/CN=Expired CA",
    )
    run(
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-selfsign",
        "-keyfile",
        "ca.key",
        "-in",
        "ca.csr",
        "-out",
        "ca.crt",
        "-notext",
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200102000000Z",
    )
    return work / "ca.crt", work / "ca.key"


@pytest.mark.parametrize("problem", ["not a CA", "expired"])
def test_unfit_signing_certificate_is_warned_about(
    workspace: Workspace, launch: Launcher, tmp_path: Path, problem: str
) -> None:
    if problem == "not a CA":
        ca, ca_key = make_ca(tmp_path, "Issuer CA")
        cert, key = make_server_cert(tmp_path, ca, ca_key, "leaf.example")
        expected = f"{workspace.tls_dir / 'tls.crt'} is not a CA certificate"
    else:
        cert, key = make_expired_ca(tmp_path)
        expected = f"{workspace.tls_dir / 'tls.crt'} expired on Jan  2 00:00:00 2020 GMT"
    install_ca(workspace, cert, key)
    workspace.write_custom_config(ssl_bump_config(workspace))
    run = launch()
    # Only a warning: whether Squid then accepts the certificate is Squid's business.
    run.wait_for_output(r"\[WARNING\] SSL-bump CA: " + re.escape(expected))
    run.wait_for_output(r"Merged CA certificate and key")
    assert_no_key_material(run.output, key)


def test_fit_ca_gives_no_certificate_warning(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
    cert, key = make_ca(tmp_path, "Good CA")
    install_ca(workspace, cert, key)
    workspace.write_custom_config(ssl_bump_config(workspace))
    run = launch()
    run.wait_ready()
    assert "SSL-bump CA:" not in run.output


def test_merged_pem_replaces_an_old_world_readable_file_by_rename(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
    cert, key = make_ca(tmp_path, "Bump CA")
    install_ca(workspace, cert, key)
    workspace.write_custom_config(ssl_bump_config(workspace))
    lib = workspace.make_dir(workspace.runtime_dir("lib"))
    merged = lib / "squid-ca.pem"
    merged.write_bytes(b"an old CA from an earlier start\n")
    os.chmod(merged, 0o666)  # writable for the entrypoint's UID too: rewriting in place would work
    old_inode = merged.stat().st_ino
    holder = open(merged, "rb")  # keeps the old inode alive, so a new file cannot reuse its number
    try:
        run = launch(workspace.env(LOG_LEVEL="DEBUG"))
        run.wait_ready()
    finally:
        holder.close()
    info = merged.stat()
    assert info.st_ino != old_inode, "squid-ca.pem was rewritten in place, not replaced"
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert merged.read_bytes() == cert.read_bytes() + key.read_bytes()
    assert [
        name for name in os.listdir(lib) if name.startswith(".squid-ca.pem")
    ] == []  # no temp left
    run.process.terminate()
    assert run.wait_exit(60) == 0
    assert "[DEBUG]" in run.stdout  # DEBUG really was on
    assert_no_key_material(run.output, key)


def test_wrong_sslcrtd_program_path_is_refused_before_squid_starts(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
    # `squid -k parse` accepts it; Squid would only later die of "helpers are crashing too rapidly".
    cert, key = make_ca(tmp_path, "Bump CA")
    install_ca(workspace, cert, key)
    wrong = "/usr/libexec/squid/security_file_certgen"
    config = ssl_bump_config(workspace).replace(
        f"sslcrtd_program {certgen_bin()}", f"sslcrtd_program {wrong}"
    )
    workspace.write_custom_config(config)
    run = launch()
    assert run.wait_exit(60) == 1
    line = (
        config.splitlines().index(
            next(ln for ln in config.splitlines() if ln.startswith("sslcrtd_program"))
        )
        + 1
    )
    assert (
        f"{workspace.custom_config} line {line}: sslcrtd_program program {wrong} does not exist"
        in run.stderr
    ), run.stderr
    assert f"the image's Squid helpers are in {certgen_bin().parent}" in run.stderr
    assert "Starting Squid proxy" not in run.stdout


def test_ssl_bump_works_as_root(workspace: Workspace, launch: Launcher, tmp_path: Path) -> None:
    # Started as root, Squid's certgen helpers run as its effective user and write the cert DB.
    if os.geteuid() != 0:
        pytest.skip("needs root to start the entrypoint as 0:0")
    for directory in (workspace.root, workspace.var):
        os.chmod(directory, 0o755)  # like the image's /var
    bump_cert, bump_key, origin_cert, origin_key = bump_with_origin(workspace, tmp_path)
    run = launch(
        argv=with_private_shm([python_for_child(), str(workspace.bin / "entrypoint.py")]),
        user=(0, 0),
    )
    run.wait_ready()
    squid_uid = int(search_group(r"Squid switches to user \S+ \(UID (\d+)\)", run.stdout))
    assert squid_uid != 0
    db = workspace.runtime_dir("lib") / "ssl_db"
    assert {p.stat().st_uid for p in [db, *db.rglob("*")]} == {squid_uid}
    issuer, status, body, expected = bumped_get(workspace, bump_cert, origin_cert, origin_key)
    assert issuer == "CephaloProxy Test Bump CA"
    assert (status, body) == (200, expected), run.stderr[-2500:]
    run.process.terminate()
    assert run.wait_exit(60) == 0
    assert_no_key_material(run.output, bump_key, origin_key)
