"""Test support (testonly): pytest fixtures, certificates, SSL-bump configs; the rest is in harness.

Everything here starts real processes; `EntrypointRun.cleanup` kills every process of the
run's session, so a failing test leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.entrypoint.harness import (  # noqa: F401 - re-exported for the tests
    PACKAGE_DIR,
    PAYLOAD_CHUNK,
    UNPRIVILEGED_GID,
    UNPRIVILEGED_UID,
    EntrypointRun,
    LocalHttpServer,
    Workspace,
    _child_user_options,
    catches,
    certgen_bin,
    free_port,
    http_get,
    pausing_squid,
    process_state,
    process_uid,
    python_for_child,
    running_as_root,
    session_processes,
    squid_bin,
    squid_path_directives,
    squid_root,
    squid_version,
    start_local_http_server,
    start_slow_origin,
    unprivileged_access_problem,
    wait_for_status,
    wait_until,
)


def with_private_shm(argv: list[str], mount_options: str = "size=64m") -> list[str]:
    """`argv` run (as root) in its own mount namespace with a fresh tmpfs at /dev/shm: Squids of
    concurrent runs on the host cannot collide there, and a test can make it unusable."""
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    if os.geteuid() != 0 or unshare is None or mount is None:
        pytest.skip("needs root, unshare and mount for a private /dev/shm")
    tools = [unshare, mount]
    # A Python step, not a shell: mount the tmpfs, then become `argv`.
    step = (
        "import os, subprocess, sys; "
        f"subprocess.run([{tools[1]!r}, '-t', 'tmpfs', '-o', {mount_options!r}, 'tmpfs', '/dev/shm'], check=True); "
        "os.execvp(sys.argv[1], sys.argv[1:])"
    )
    return [
        tools[0],
        "--mount",
        "--propagation",
        _propagation(tools[0]),
        sys.executable,
        "-c",
        step,
        *argv,
    ]


def _propagation(unshare: str) -> str:
    # "private" keeps the tmpfs from propagating to the host. In a chroot "/" is no mount point
    # and unshare cannot make it private: there (tools/debian-bazel) the chroot already lives
    # in a private mount namespace whose mounts are private, so "unchanged" stays contained.
    probe = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "true"], capture_output=True, timeout=30
    )
    return "private" if probe.returncode == 0 else "unchanged"


# -- certificates (openssl CLI, tests only) --------------------------------------------------------
def openssl() -> str | None:
    """The openssl CLI, or None: modules skip on None (`skipif(openssl() is None)`)."""
    return shutil.which("openssl")


def openssl_path() -> str:
    """The openssl CLI for a command line; the test skips when there is none."""
    found = openssl()
    if found is None:
        pytest.skip("needs the openssl command line tool")
    return found


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    subprocess.run(
        [
            openssl_path(),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            f"/CN={name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return cert, key


def make_server_cert(directory: Path, ca_cert: Path, ca_key: Path, name: str) -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        f"basicConstraints=CA:FALSE\nsubjectAltName=DNS:{name},IP:127.0.0.1\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    subprocess.run(
        [
            openssl_path(),
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            f"/CN={name}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        [
            openssl_path(),
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_cert),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            str(extensions),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return cert, key


def key_body_lines(key: Path) -> list[str]:
    """The base64 lines of a PEM key: none of them may ever appear in output."""
    return [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]


def install_ca(workspace: Workspace, cert: Path | None, key: Path | None) -> None:
    workspace.make_dir(workspace.tls_dir, 0o775)
    for source, name in ((cert, "tls.crt"), (key, "tls.key")):
        if source is not None:
            shutil.copy(source, workspace.tls_dir / name)
            os.chmod(workspace.tls_dir / name, 0o664)


def assert_no_key_material(output: str, *keys: Path) -> None:
    assert "PRIVATE KEY" not in output
    for key in keys:
        for line in key_body_lines(key):
            assert line not in output


def iter_lines(text: str) -> Iterator[str]:
    yield from text.splitlines()


# -- pytest fixtures (import them into a test module to use them) ----------------------------------
@pytest.fixture
def squid_available() -> None:
    if not os.access(squid_bin(), os.X_OK):
        pytest.skip(f"Squid not found at {squid_bin()} (set CEPHALOPROXY_SQUID_ROOT)")
    problem = unprivileged_access_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture
def workspace() -> Iterator[Workspace]:
    created = Workspace()
    try:
        yield created
    finally:
        created.remove()


Launcher = Callable[..., EntrypointRun]


@pytest.fixture
def launch(workspace: Workspace, squid_available: None) -> Iterator[Launcher]:
    runs: list[EntrypointRun] = []

    def start(
        env: Mapping[str, str] | None = None,
        argv: list[str] | None = None,
        stdout: int | None = None,
        user: tuple[int, int] | None = None,
    ) -> EntrypointRun:
        run = EntrypointRun(
            workspace, env if env is not None else workspace.env(), argv, stdout, user
        )
        runs.append(run)
        return run

    try:
        yield start
    finally:
        for run in runs:
            run.cleanup()


def start_local_https_server(body: str, cert: Path, key: Path) -> LocalHttpServer:
    import ssl

    server = start_local_http_server(body)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    return server


ORIGIN_HOSTNAME = "origin.cephaloproxy.test"


def ssl_bump_config(workspace: Workspace, upstream_ca: Path | None = None) -> str:
    lib, run = workspace.runtime_dir("lib"), workspace.runtime_dir("run")
    # Squid resolves the test origin to 127.0.0.1 only (Squid 6 does not fall back from ::1).
    hosts = workspace.etc / "hosts"
    hosts.write_text(f"127.0.0.1 {ORIGIN_HOSTNAME}\n")
    os.chmod(hosts, 0o664)
    outgoing = f"tls_outgoing_options cafile={upstream_ca}" if upstream_ca else ""
    return f"""
http_port 127.0.0.1:{workspace.squid_port} ssl-bump tls-cert={lib}/squid-ca.pem generate-host-certificates=on dynamic_cert_mem_cache_size=4MB
sslcrtd_program {certgen_bin()} -s {lib}/ssl_db -M 4MB
sslcrtd_children 2 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
{outgoing}
http_access allow localhost
http_access deny all
pid_filename {run}/squid.pid
cache_log /dev/stderr
access_log stdio:/dev/stdout
logfile_rotate 0
visible_hostname cephaloproxy-test
shutdown_lifetime 1 seconds
pinger_enable off
netdb_filename none
hosts_file {hosts}
"""
