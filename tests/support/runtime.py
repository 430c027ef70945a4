"""Find a working container runtime (docker or podman) and drive its CLI with timeouts.

The acceptance suite treats the image like an operator does: through the `docker` or
`podman` command line. Everything here shells out to that CLI (argv lists, never a
shell) and bounds every call with a timeout so a wedged engine fails a test instead of
hanging it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support import timeouts

# Force a runtime: "docker", "podman" or a path to either binary.
RUNTIME_ENV = "CEPHALOPROXY_CONTAINER_RUNTIME"
CANDIDATES: tuple[str, ...] = ("docker", "podman")

# podman's default containers.conf raises ulimits that cannot be raised on some hosts
# (e.g. this CI machine: "setrlimit: operation not permitted"). When the user has not
# chosen a containers.conf we write this one, which keeps the process's own limits.
PODMAN_CONTAINERS_CONF = "[containers]\ndefault_ulimits = []\n"

# Bazel runs tests with a minimal PATH (often without /usr/sbin, where Debian puts runc),
# so the usual system dirs are searched after $PATH.
SYSTEM_DIRS: tuple[str, ...] = (
    "/usr/local/bin",
    "/usr/bin",
    "/bin",
    "/usr/local/sbin",
    "/usr/sbin",
    "/sbin",
)

# Wait bounds before $CEPHALOPROXY_TEST_TIMEOUT_SCALE (tests/support/timeouts.py) is applied.
DEFAULT_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 30.0

# `exec` of a program the image does not have. docker 20.10 (runc) exits 126 ("OCI runtime
# exec failed: ... no such file or directory"), podman 127 ("OCI runtime attempted to
# invoke a command that was not found"); both measured on this machine, docker's by
# tests/docker_daemon_test.py. `run` with a missing entrypoint is 127 on both.
EXEC_NOT_FOUND_EXIT_CODES: Mapping[str, int] = {"docker": 126, "podman": 127}


class ContainerRuntimeError(RuntimeError):
    """A runtime command failed or timed out; the message carries argv and output."""


@dataclasses.dataclass(frozen=True)
class RuntimeSpec:
    """How to invoke a runtime: the argv prefix and the environment to run it with."""

    name: str  # "docker" or "podman"
    base_argv: tuple[str, ...]
    env: Mapping[str, str]
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Detection:
    """Result of runtime detection: the chosen runtime, or why every candidate failed."""

    spec: RuntimeSpec | None
    rejected: tuple[str, ...]

    def reason(self) -> str:
        return "; ".join(self.rejected) if self.rejected else "no candidate tried"


def _kind_of(candidate: str) -> str:
    return "podman" if "podman" in Path(candidate).name else "docker"


def build_spec(
    kind: str,
    executable: str,
    environ: Mapping[str, str],
    conf_dir: Path | None = None,
    search_path: str | None = None,
) -> RuntimeSpec:
    """Build the argv/env for a runtime binary without running it."""
    env = dict(environ)
    argv: list[str] = [executable]
    notes: list[str] = [f"{kind} at {executable}"]
    if kind == "podman":
        # crun fails on some cgroup layouts where runc works; prefer runc when present.
        runc = shutil.which("runc", path=search_path or environ.get("PATH", os.defpath))
        if runc:
            argv += ["--runtime", runc]
            notes.append(f"OCI runtime {runc}")
        if env.get("CONTAINERS_CONF"):
            notes.append(f"CONTAINERS_CONF={env['CONTAINERS_CONF']} (from the environment)")
        else:
            directory = conf_dir or Path(tempfile.mkdtemp(prefix="cephaloproxy-podman-"))
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "containers.conf"
            conf.write_text(PODMAN_CONTAINERS_CONF, encoding="utf-8")
            env["CONTAINERS_CONF"] = str(conf)
            notes.append(f"CONTAINERS_CONF={conf} (written by the suite: default_ulimits = [])")
    return RuntimeSpec(name=kind, base_argv=tuple(argv), env=env, notes=tuple(notes))


def probe(spec: RuntimeSpec, timeout: float | None = None) -> str | None:
    """Return None when the runtime's engine answers `info`, else a reason string.

    A docker CLI without a reachable daemon is common (it is the case here), so the
    binary being on PATH is not enough.
    """
    argv = [*spec.base_argv, "info"]
    timeout = timeouts.scaled(PROBE_TIMEOUT_S) if timeout is None else timeout
    try:
        done = subprocess.run(
            argv, env=dict(spec.env), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"{spec.name}: `{' '.join(argv)}` did not answer within {timeout:.0f} s"
    except OSError as error:
        return f"{spec.name}: cannot execute {spec.base_argv[0]}: {error}"
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit code {done.returncode}"
        return f"{spec.name}: engine not usable (`{spec.name} info` failed: {last})"
    return None


def detect_runtime(
    environ: Mapping[str, str] | None = None,
    conf_dir: Path | None = None,
    probe_timeout: float | None = None,
    extra_dirs: tuple[str, ...] = SYSTEM_DIRS,
) -> Detection:
    """Pick the first runtime whose engine answers: $CEPHALOPROXY_CONTAINER_RUNTIME, else docker, then podman."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    path = os.pathsep.join([env.get("PATH", os.defpath), *extra_dirs])
    forced = env.get(RUNTIME_ENV, "").strip()
    candidates = (forced,) if forced else CANDIDATES
    rejected: list[str] = []
    for candidate in candidates:
        executable = shutil.which(candidate, path=path)
        if executable is None:
            where = f"${RUNTIME_ENV}={candidate}" if forced else candidate
            rejected.append(f"{where}: not found on PATH")
            continue
        spec = build_spec(_kind_of(candidate), executable, env, conf_dir, search_path=path)
        problem = probe(spec, probe_timeout)
        if problem is None:
            return Detection(spec=spec, rejected=tuple(rejected))
        rejected.append(problem)
    return Detection(spec=None, rejected=tuple(rejected))


@dataclasses.dataclass(frozen=True)
class PortMapping:
    host_ip: str
    host_port: int
    container_port: int

    def flag(self) -> str:
        return f"{self.host_ip}:{self.host_port}:{self.container_port}/tcp"


@dataclasses.dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True

    def flag(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


@dataclasses.dataclass
class RunOptions:
    """`run` flags the suite uses; everything else goes through extra_args."""

    name: str
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    user: str | None = None
    publish: Sequence[PortMapping] = ()
    mounts: Sequence[Mount] = ()
    tmpfs: Sequence[str] = ()
    read_only: bool = False
    entrypoint: str | None = None
    command: Sequence[str] = ()
    add_hosts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    extra_args: Sequence[str] = ()

    def flags(self) -> list[str]:
        flags = ["--name", self.name]
        for key, value in self.env.items():
            flags += ["--env", f"{key}={value}"]
        if self.user is not None:
            flags += ["--user", self.user]
        for port in self.publish:
            flags += ["--publish", port.flag()]
        for mount in self.mounts:
            flags += ["--volume", mount.flag()]
        for target in self.tmpfs:
            flags += ["--tmpfs", target]
        if self.read_only:
            flags.append("--read-only")
        if self.entrypoint is not None:
            flags += ["--entrypoint", self.entrypoint]
        for host, address in self.add_hosts.items():
            flags += ["--add-host", f"{host}:{address}"]
        flags += list(self.extra_args)
        return flags


@dataclasses.dataclass(frozen=True)
class ContainerState:
    status: str  # "running", "exited", "created", ...
    running: bool
    exit_code: int


@dataclasses.dataclass(frozen=True)
class ContainerLogs:
    """Container stdout and stderr, kept apart (the entrypoint logs ERROR on stderr)."""

    stdout: str
    stderr: str

    @property
    def combined(self) -> str:
        return (
            self.stdout
            + ("\n" if self.stdout and not self.stdout.endswith("\n") else "")
            + self.stderr
        )


_LOADED = re.compile(r"^Loaded image(?:\(s\))?(?: ID)?:\s*(?P<refs>\S.*)$", re.MULTILINE)


def parse_loaded_refs(output: str) -> list[str]:
    """Image references from `docker load` / `podman load` output."""
    refs: list[str] = []
    for match in _LOADED.finditer(output):
        refs += [ref.strip() for ref in match.group("refs").split(",") if ref.strip()]
    return refs


class ContainerRuntime:
    """A docker/podman CLI wrapper; every call has a timeout and raises with context on failure."""

    def __init__(self, spec: RuntimeSpec, default_timeout: float | None = None) -> None:
        self.spec = spec
        self.default_timeout = (
            timeouts.scaled(DEFAULT_TIMEOUT_S) if default_timeout is None else default_timeout
        )
        # Every per-call bound below is a wait, scaled the same way.
        self.scale = timeouts.scale()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def exec_not_found_exit_code(self) -> int:
        """What `exec` of a missing program exits with under this runtime (see EXEC_NOT_FOUND_EXIT_CODES)."""
        return EXEC_NOT_FOUND_EXIT_CODES[self.name]

    def command(
        self,
        args: Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.spec.base_argv, *args]
        limit = self.default_timeout if timeout is None else timeout * self.scale
        try:
            done = subprocess.run(
                argv,
                env=dict(self.spec.env),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise ContainerRuntimeError(
                f"timed out after {limit:.0f} s: {' '.join(argv)}"
            ) from error
        if check and done.returncode != 0:
            raise ContainerRuntimeError(
                f"`{' '.join(argv)}` exited {done.returncode}\nstdout: {done.stdout.strip()}\n"
                f"stderr: {done.stderr.strip()}"
            )
        return done

    # Images -----------------------------------------------------------------------
    def load(self, tarball: Path, timeout: float = 900.0) -> list[str]:
        done = self.command(["load", "--input", str(tarball)], timeout=timeout)
        refs = parse_loaded_refs(done.stdout + "\n" + done.stderr)
        if not refs:
            raise ContainerRuntimeError(
                f"`{self.name} load` of {tarball} printed no image reference:\n{done.stdout}{done.stderr}"
            )
        return refs

    def image_exists(self, ref: str) -> bool:
        return self.command(["image", "inspect", ref], check=False, timeout=60).returncode == 0

    def image_size(self, ref: str) -> int:
        done = self.command(["image", "inspect", "--format", "{{.Size}}", ref], timeout=60)
        return int(done.stdout.strip())

    def save(self, ref: str, destination: Path, timeout: float = 900.0) -> None:
        """`save` as a docker-archive (podman's default format too; named so a changed default cannot bite)."""
        fmt = ["--format", "docker-archive"] if self.name == "podman" else []
        self.command(["save", *fmt, "--output", str(destination), ref], timeout=timeout)

    def remove_image(self, ref: str) -> None:
        self.command(["image", "rm", ref], check=False, timeout=120)

    # Containers -------------------------------------------------------------------
    def run_detached(self, image: str, options: RunOptions, timeout: float = 120.0) -> str:
        done = self.command(
            ["run", "--detach", *options.flags(), image, *options.command], timeout=timeout
        )
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else options.name

    def run_once(
        self, image: str, options: RunOptions, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """`run --rm` in the foreground; returns the finished process (not checked)."""
        return self.command(
            ["run", "--rm", *options.flags(), image, *options.command], timeout=timeout, check=False
        )

    def create(self, image: str, name: str, timeout: float = 120.0) -> None:
        self.command(["create", "--name", name, image], timeout=timeout)

    def export(self, name: str, destination: Path, timeout: float = 600.0) -> None:
        self.command(["export", "--output", str(destination), name], timeout=timeout)

    def exec(
        self, name: str, argv: Sequence[str], timeout: float = 60.0, user: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        flags = ["--user", user] if user else []
        return self.command(["exec", *flags, name, *argv], timeout=timeout, check=False)

    def logs(self, name: str, timeout: float = 60.0) -> ContainerLogs:
        done = self.command(["logs", name], timeout=timeout, check=False)
        return ContainerLogs(stdout=done.stdout, stderr=done.stderr)

    def stop(self, name: str, grace_seconds: int = 30, timeout: float | None = None) -> None:
        limit = grace_seconds + 60.0 if timeout is None else timeout
        self.command(["stop", "--time", str(grace_seconds), name], timeout=limit)

    def kill(self, name: str, signal: str = "KILL") -> None:
        self.command(["kill", "--signal", signal, name], timeout=60, check=False)

    def rm(self, name: str) -> None:
        """Force-remove; a container that is already gone is fine."""
        self.command(["rm", "--force", name], timeout=120, check=False)

    def inspect(self, name: str) -> dict[str, Any]:  # parsed JSON
        done = self.command(["inspect", name], timeout=60)
        data = json.loads(done.stdout)
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise ContainerRuntimeError(f"unexpected `inspect {name}` output: {done.stdout[:500]}")
        return data[0]

    def state(self, name: str) -> ContainerState:
        raw = self.inspect(name).get("State")
        if not isinstance(raw, dict):
            raise ContainerRuntimeError(f"`inspect {name}` has no State object")
        status = str(raw.get("Status", "")).lower()
        return ContainerState(
            status=status,
            running=bool(raw.get("Running", False)),
            exit_code=int(raw.get("ExitCode", -1)),
        )

    def wait_for_exit(self, name: str, timeout: float, poll_s: float = 0.2) -> ContainerState:
        """Poll until the container is no longer running; raise after `timeout` (scaled) seconds."""
        timeout *= self.scale
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(name)
            if not state.running and state.status not in (
                "running",
                "created",
                "configured",
                "initialized",
            ):
                return state
            if time.monotonic() >= deadline:
                raise ContainerRuntimeError(
                    f"container {name} still {state.status} after {timeout:.0f} s"
                )
            time.sleep(poll_s)

    def gateway_address(self) -> str | None:
        """The host's address on the default bridge network, as seen from containers."""
        if self.name == "podman":
            argv = [
                "network",
                "inspect",
                "podman",
                "--format",
                "{{range .Subnets}}{{.Gateway}}|{{.Subnet}} {{end}}",
            ]
        else:
            argv = [
                "network",
                "inspect",
                "bridge",
                "--format",
                "{{range .IPAM.Config}}{{.Gateway}}|{{.Subnet}} {{end}}",
            ]
        return gateway_from_inspect(self.command(argv, check=False, timeout=60).stdout)


def gateway_from_inspect(output: str) -> str | None:
    """The first IPv4 gateway in `GATEWAY|SUBNET ...` words; an empty gateway means the subnet's first host.

    docker leaves IPAM.Config's Gateway empty for a default bridge it numbered itself
    (docker.io 20.10 here: `{"Subnet": "172.17.0.0/16"}` only) and gives docker0 the
    subnet's first address; podman always names its gateway.
    """
    for word in output.split():
        gateway, _, subnet = word.partition("|")
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", gateway):
            return gateway
        try:
            network = ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            continue
        if network.version == 4 and network.num_addresses > 2:
            return str(network.network_address + 1)
    return None


def wait_until(predicate: Callable[[], bool], timeout: float, poll_s: float = 0.25) -> bool:
    """Poll `predicate` until it is true or `timeout` passes; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
