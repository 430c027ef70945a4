"""Start CephaloProxy containers the way operators do, and always clean them up.

Shared by the pytest fixtures (conftest.py) and the benchmark script.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support import netutil, timeouts
from tests.support.runtime import (
    ContainerLogs,
    ContainerRuntime,
    ContainerState,
    Mount,
    PortMapping,
    RunOptions,
)

SQUID_CONTAINER_PORT = 3128
HEALTH_CONTAINER_PORT = 8080
RUNTIME_DIRS: tuple[str, ...] = (
    "/var/run/squid",
    "/var/log/squid",
    "/var/lib/squid",
    "/var/spool/squid",
    "/var/cache/squid",
)
CONFIG_PATH = "/etc/squid/squid.conf"
DEFAULT_CONFIG_PATH = "/etc/squid/squid.conf.default"
TLS_SECRET_PATH = "/etc/squid/ssl_cert"
PYTHON = "/usr/bin/python3"

# Override the address containers use to reach servers the tests run on the host.
HOST_ADDRESS_ENV = "CEPHALOPROXY_TEST_HOST_ADDRESS"
READY_TIMEOUT_S = 90.0  # waits here are scaled by $CEPHALOPROXY_TEST_TIMEOUT_SCALE
HTTP_TIMEOUT_S = 10.0


@dataclasses.dataclass
class ProxyContainer:
    """A running CephaloProxy container with its proxy and health ports published on 127.0.0.1."""

    runtime: ContainerRuntime
    name: str
    proxy_port: int
    health_port: int

    def logs(self) -> ContainerLogs:
        return self.runtime.logs(self.name)

    def state(self) -> ContainerState:
        return self.runtime.state(self.name)

    def is_running(self) -> bool:
        return self.state().running

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds until /ready answered 200 (within `timeout`, scaled); raises with the container's logs otherwise."""
        try:
            return netutil.wait_for_status(
                netutil.LOOPBACK,
                self.health_port,
                "/ready",
                200,
                timeouts.scaled(timeout),
                still_alive=self.is_running,
            )
        except TimeoutError as error:
            logs = self.logs()
            raise AssertionError(
                f"{self.name} never became ready: {error}\n{logs.combined}"
            ) from error

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        """Until `text` is in the container's stdout: /ready can answer 200 a moment before
        the entrypoint's own `Container ready` line reaches the runtime's log."""
        deadline = time.monotonic() + timeouts.scaled(timeout)
        while text not in self.logs().stdout:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: {text!r} not logged within {timeout:g} s:\n{self.logs().combined}"
                )
            time.sleep(0.1)

    def health(self, path: str = "/health") -> netutil.HttpResult:
        return netutil.http_get(
            netutil.LOOPBACK, self.health_port, path, timeouts.scaled(HTTP_TIMEOUT_S)
        )

    def get_via_proxy(self, url: str, timeout: float = 30.0) -> netutil.HttpResult:
        return netutil.proxy_get(netutil.LOOPBACK, self.proxy_port, url, timeouts.scaled(timeout))

    def stop(self, grace_seconds: int = 30) -> float:
        """`stop` with the grace period; returns the seconds it took."""
        started = time.monotonic()
        self.runtime.stop(self.name, grace_seconds)
        return time.monotonic() - started

    def wait_for_exit(self, timeout: float) -> ContainerState:
        return self.runtime.wait_for_exit(self.name, timeout)


class ContainerFactory:
    """Creates uniquely named containers and removes every one of them in cleanup()."""

    def __init__(self, runtime: ContainerRuntime, image: str, label: str = "test") -> None:
        self.runtime = runtime
        self.image = image
        self.label = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40] or "test"
        self.names: list[str] = []

    def unique_name(self, purpose: str = "") -> str:
        suffix = re.sub(r"[^a-z0-9]+", "-", purpose.lower()).strip("-")[:20]
        name = "-".join(
            part for part in ("cephaloproxy-acc", self.label, suffix, secrets.token_hex(4)) if part
        )
        self.names.append(name)
        return name

    def start(
        self,
        purpose: str = "",
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
        tmpfs: Sequence[str] = (),
        read_only: bool = False,
        add_hosts: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> ProxyContainer:
        """`run -d` the image with both ports published on fresh 127.0.0.1 ports."""
        proxy_port, health_port = netutil.free_ports(2)
        name = self.unique_name(purpose)
        options = RunOptions(
            name=name,
            env=dict(env or {}),
            user=user,
            publish=(
                PortMapping(netutil.LOOPBACK, proxy_port, SQUID_CONTAINER_PORT),
                PortMapping(netutil.LOOPBACK, health_port, HEALTH_CONTAINER_PORT),
            ),
            mounts=mounts,
            tmpfs=tmpfs,
            read_only=read_only,
            add_hosts=dict(add_hosts or {}),
            extra_args=extra_args,
        )
        self.runtime.run_detached(self.image, options)
        return ProxyContainer(self.runtime, name, proxy_port, health_port)

    def run_python(self, code: str, timeout: float = 120.0) -> str:
        """Run the image's interpreter with `-c code` in a throwaway container; returns stdout."""
        options = RunOptions(name=self.unique_name("py"), entrypoint=PYTHON, command=("-c", code))
        done = self.runtime.run_once(self.image, options, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(
                f"python3 -c in the image exited {done.returncode}: {done.stderr.strip()}"
            )
        return done.stdout

    def cleanup(self) -> list[str]:
        """Force-remove every container this factory named; returns the names removed."""
        removed: list[str] = []
        for name in self.names:
            self.runtime.rm(name)
            removed.append(name)
        self.names.clear()
        return removed


def host_address(runtime: ContainerRuntime) -> str | None:
    """Where containers on the default network reach this host: $CEPHALOPROXY_TEST_HOST_ADDRESS or the bridge gateway."""
    override = os.environ.get(HOST_ADDRESS_ENV, "").strip()
    return override or runtime.gateway_address()


def tmpfs_runtime_dirs(include_tmp: bool = True) -> list[str]:
    """tmpfs mounts for every runtime dir (mode 1777 is both runtimes' default for --tmpfs)."""
    return [*RUNTIME_DIRS, *(["/tmp"] if include_tmp else [])]


def write_readable(path: Path, text: str) -> Path:
    """A host file the container's non-root UID can read when bind-mounted (pytest tmp dirs are 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o755)
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o644)
    return path


def ssl_bump_config(
    default_config: str,
    connect_ports: Sequence[int] = (),
    upstream_ca: str = f"{TLS_SECRET_PATH}/tls.crt",
) -> str:
    """The packaged default turned into an SSL-bump config using the mounted CA.

    The entrypoint merges /etc/squid/ssl_cert/tls.{crt,key} into /var/lib/squid/squid-ca.pem
    and initialises the certificate DB named by sslcrtd_program. Upstream servers are
    verified against `upstream_ca` (tls_outgoing_options cafile), so nothing is
    accepted blindly. `connect_ports` are added to SSL_ports so CONNECT may reach them.
    """
    bump_port = (
        f"http_port {SQUID_CONTAINER_PORT} ssl-bump tls-cert=/var/lib/squid/squid-ca.pem"
        " generate-host-certificates=on dynamic_cert_mem_cache_size=4MB"
    )
    lines = [
        bump_port if line.split()[:1] == ["http_port"] else line
        for line in default_config.splitlines()
    ]
    if bump_port not in lines:
        lines.insert(0, bump_port)
    header = [f"acl SSL_ports port {port}" for port in connect_ports]
    footer = [
        "sslcrtd_program /usr/lib/squid/security_file_certgen -s /var/lib/squid/ssl_db -M 4MB",
        "sslcrtd_children 3 startup=1 idle=1",
        f"tls_outgoing_options cafile={upstream_ca}",
        "acl step1 at_step SslBump1",
        "ssl_bump peek step1",
        "ssl_bump bump all",
    ]
    return "\n".join([*header, *lines, *footer]) + "\n"
