"""Checks for the deployment kit's manifests: restricted Pod Security, runtime mounts, grace periods.

Each function takes plain data (a pod spec, a compose service, ...) as loaded from YAML and
returns a list of problems, each naming where and what; an empty list means fine. Environment
variables are read with the entrypoint's own parser (entrypoint.settings), so a value the
image would reject (LOG_LEVEL "1", SHUTDOWN_TIMEOUT "soon") is a problem here too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from entrypoint.settings import Settings, load_settings

# Every directory the entrypoint or Squid writes, with a read-only root filesystem.
RUNTIME_DIRS = (
    "/var/run/squid",
    "/var/log/squid",
    "/var/lib/squid",
    "/var/spool/squid",
    "/var/cache/squid",
    "/tmp",
)
SHM_DIR = "/dev/shm"
HEALTHCHECK = ["CMD", "/usr/bin/python3", "/usr/local/bin/healthcheck.py", "--check"]
# Grace period = SHUTDOWN_TIMEOUT + a margin for killing what is left of Squid and exiting.
GRACE_MARGIN_MIN_S = 5.0
GRACE_MARGIN_MAX_S = 30.0

# Pod Security Standards, "restricted" profile (Kubernetes 1.32).
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
RESTRICTED_ADDABLE_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
ALLOWED_SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def settings_from_env(env: Mapping[str, str], where: str) -> tuple[Settings, list[str]]:
    """The entrypoint's reading of `env`; its warnings become problems."""
    settings, warnings = load_settings(env)
    return settings, [f"{where}: {warning}" for warning in warnings]


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    """A Kubernetes container's literal env values (valueFrom entries cannot be checked offline)."""
    return {
        item["name"]: str(item["value"]) for item in container.get("env") or [] if "value" in item
    }


def grace_problems(shutdown_timeout: float, grace_s: float | None, where: str) -> list[str]:
    if grace_s is None:
        return [
            f"{where}: no grace period set (the runtime default may be shorter than SHUTDOWN_TIMEOUT)"
        ]
    margin = grace_s - shutdown_timeout
    if not GRACE_MARGIN_MIN_S <= margin <= GRACE_MARGIN_MAX_S:
        return [
            f"{where}: grace period {grace_s:g} s must be SHUTDOWN_TIMEOUT ({shutdown_timeout:g} s) plus"
            f" {GRACE_MARGIN_MIN_S:g}-{GRACE_MARGIN_MAX_S:g} s, so the entrypoint finishes its own shutdown"
            " before the runtime kills the container"
        ]
    return []


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}


def parse_duration(text: str) -> float:
    """A compose duration ("40s", "1m30s") in seconds."""
    value = str(text).strip()
    parts = _DURATION_PART.findall(value)
    if not value or "".join(number + unit for number, unit in parts) != value:
        raise ValueError(f"not a compose duration: {text!r}")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def squid_shutdown_lifetime(config_text: str) -> float:
    """Squid's shutdown_lifetime in seconds (its default is 30 s)."""
    value = 30.0
    for line in config_text.splitlines():
        words = line.split()
        if words[:1] == ["shutdown_lifetime"] and len(words) >= 2:
            unit = words[2] if len(words) > 2 else "seconds"
            factor = {"second": 1.0, "seconds": 1.0, "minute": 60.0, "minutes": 60.0}.get(unit)
            if factor is None:
                raise ValueError(f"unknown shutdown_lifetime unit in {line!r}")
            value = float(words[1]) * factor
    return value


def config_shutdown_problems(config_text: str, shutdown_timeout: float, where: str) -> list[str]:
    """Squid exits shutdown_lifetime + 1 s after SIGTERM; that must fit in SHUTDOWN_TIMEOUT."""
    lifetime = squid_shutdown_lifetime(config_text)
    if lifetime + 1 >= shutdown_timeout:
        return [
            f"{where}: shutdown_lifetime {lifetime:g} s + 1 s does not fit in SHUTDOWN_TIMEOUT"
            f" {shutdown_timeout:g} s: Squid would be killed before it drains"
        ]
    return []


# Pod Security Standards -----------------------------------------------------------------


def _containers(pod_spec: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for kind in CONTAINER_LISTS:
        for container in pod_spec.get(kind) or []:
            yield f"{kind}[{container.get('name', '?')}]", container


def restricted_problems(pod_spec: Mapping[str, Any], where: str) -> list[str]:
    """What the restricted Pod Security Standard rejects, plus readOnlyRootFilesystem (ours)."""
    problems: list[str] = []
    pod_context = pod_spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            problems.append(f"{where}: {field} must not be true")
    for volume in pod_spec.get("volumes") or []:
        kinds = [key for key in volume if key != "name"]
        if not kinds or any(kind not in RESTRICTED_VOLUME_TYPES for kind in kinds):
            problems.append(
                f"{where}: volume {volume.get('name')!r} of type {kinds} is not allowed"
            )
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"{where}: sysctl {sysctl.get('name')!r} is not in the safe set")
    if pod_context.get("runAsUser") == 0:
        problems.append(f"{where}: pod securityContext.runAsUser must not be 0")
    problems += _selinux_problems(pod_context, f"{where}: pod")
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        problems.append(f"{where}: pod seccompProfile {pod_seccomp!r} is not allowed")
    containers = list(_containers(pod_spec))
    if not containers:
        problems.append(f"{where}: no containers")
    for name, container in containers:
        context = container.get("securityContext") or {}
        at = f"{where}: {name}"
        if context.get("privileged"):
            problems.append(f"{at}: privileged must not be true")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation must be false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{at}: capabilities.drop must contain ALL")
        added = set(capabilities.get("add") or []) - RESTRICTED_ADDABLE_CAPABILITIES
        if added:
            problems.append(f"{at}: capabilities.add {sorted(added)} is not allowed")
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{at}: runAsNonRoot must be true (on the container or the pod)")
        if context.get("runAsUser") == 0:
            problems.append(f"{at}: runAsUser must not be 0")
        seccomp = (context.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(
                f"{at}: seccompProfile must be RuntimeDefault or Localhost (got {seccomp!r})"
            )
        if context.get("procMount") not in (None, "Default"):
            problems.append(f"{at}: procMount must be Default")
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{at}: windowsOptions.hostProcess must not be true")
        if (context.get("appArmorProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{at}: appArmorProfile must not be Unconfined")
        problems += _selinux_problems(context, at)
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{at}: hostPort {port['hostPort']} is not allowed")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: readOnlyRootFilesystem must be true")
    return problems


def _selinux_problems(context: Mapping[str, Any], at: str) -> list[str]:
    options = context.get("seLinuxOptions") or {}
    problems = []
    if options.get("type", "") not in ALLOWED_SELINUX_TYPES:
        problems.append(f"{at}: seLinuxOptions.type {options['type']!r} is not allowed")
    for field in ("user", "role"):
        if options.get(field):
            problems.append(f"{at}: seLinuxOptions.{field} must not be set")
    return problems


# The image's contract on Kubernetes ----------------------------------------------------


def proxy_container(pod_spec: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = pod_spec.get("containers") or []
    named = [c for c in containers if c.get("name") == "cephaloproxy"]
    if len(named) != 1:
        raise AssertionError(
            f"expected one container named cephaloproxy, got {[c.get('name') for c in containers]}"
        )
    return named[0]


def pod_problems(pod_spec: Mapping[str, Any], where: str) -> list[str]:
    """Mounts, config lookup, probes, resources and grace period of the CephaloProxy pod."""
    problems: list[str] = []
    container = proxy_container(pod_spec)
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes") or []}
    mounts = {
        mount["mountPath"].rstrip("/") or "/": mount
        for mount in container.get("volumeMounts") or []
    }
    for mount in mounts.values():
        if mount.get("subPath") or mount.get("subPathExpr"):
            problems.append(
                f"{where}: {mount['mountPath']} uses subPath (updates never reach the pod)"
            )
        if mount["name"] not in volumes:
            problems.append(
                f"{where}: mount {mount['mountPath']} names no volume {mount['name']!r}"
            )
    for directory in RUNTIME_DIRS:
        mount = mounts.get(directory)
        volume = volumes.get(mount["name"]) if mount else None
        if volume is None or not (
            {"emptyDir", "persistentVolumeClaim", "ephemeral"} & volume.keys()
        ):
            problems.append(f"{where}: {directory} needs a writable volume (emptyDir or a claim)")
        elif mount.get("readOnly"):
            problems.append(f"{where}: {directory} is mounted read-only")
    shm = mounts.get(SHM_DIR)
    shm_volume = volumes.get(shm["name"]) if shm else None
    if not shm_volume or (shm_volume.get("emptyDir") or {}).get("medium") != "Memory":
        problems.append(f"{where}: {SHM_DIR} needs an emptyDir with medium: Memory")
    if "/etc/squid" in mounts:
        problems.append(
            f"{where}: a volume over /etc/squid hides /etc/squid/squid.conf.default; mount elsewhere"
        )

    env = container_env(container)
    settings, env_problems = settings_from_env(env, where)
    problems += env_problems
    if "SHUTDOWN_TIMEOUT" not in env:
        problems.append(
            f"{where}: set SHUTDOWN_TIMEOUT explicitly (the grace period is derived from it)"
        )
    problems += grace_problems(
        settings.shutdown_timeout, pod_spec.get("terminationGracePeriodSeconds"), where
    )
    config_dir = str(settings.config.parent)
    config_volume = volumes.get(mounts[config_dir]["name"]) if config_dir in mounts else None
    if config_volume is None or "configMap" not in config_volume:
        problems.append(
            f"{where}: CEPHALOPROXY_CONFIG={settings.config} is not in a mounted ConfigMap directory"
        )

    ports = {port.get("name"): port.get("containerPort") for port in container.get("ports") or []}
    if ports.get("proxy") != settings.squid_port or ports.get("health") != settings.health_port:
        problems.append(f"{where}: container ports {ports} do not match SQUID_PORT/HEALTH_PORT")
    for probe, path in (
        ("startupProbe", None),
        ("livenessProbe", "/health"),
        ("readinessProbe", "/ready"),
    ):
        get = (container.get(probe) or {}).get("httpGet") or {}
        if (
            not get
            or get.get("port") not in ("health", settings.health_port)
            or (path and get.get("path") != path)
        ):
            problems.append(
                f"{where}: {probe} must GET {path or '/health'} on the health port, got {get}"
            )
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (resources.get(kind) or {}):
                problems.append(f"{where}: resources.{kind}.{resource} is not set")
    return problems


def deployment_problems(deployment: Mapping[str, Any], where: str) -> list[str]:
    spec = deployment["spec"]
    template = spec["template"]
    problems = restricted_problems(template["spec"], where) + pod_problems(template["spec"], where)
    labels = template.get("metadata", {}).get("labels") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    if not selector or any(labels.get(key) != value for key, value in selector.items()):
        problems.append(f"{where}: the selector {selector} does not match the pod labels {labels}")
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        if (strategy.get("rollingUpdate") or {}).get("maxUnavailable") != 0:
            problems.append(f"{where}: RollingUpdate must keep maxUnavailable 0")
    return problems


# Compose ----------------------------------------------------------------------------------


def _tmpfs_targets(service: Mapping[str, Any]) -> set[str]:
    entries = service.get("tmpfs") or []
    targets = {
        entry.split(":", 1)[0] for entry in ([entries] if isinstance(entries, str) else entries)
    }
    for volume in service.get("volumes") or []:
        if isinstance(volume, Mapping) and volume.get("type") == "tmpfs":
            targets.add(volume["target"])
    return targets


def compose_service_problems(service: Mapping[str, Any], where: str) -> list[str]:
    """The compose service against the image's contract (what the upstream compose file got wrong)."""
    problems: list[str] = []
    uid, _, gid = str(service.get("user", "")).partition(":")
    if not uid.isdigit() or int(uid) == 0 or gid != "0":
        problems.append(
            f'{where}: user must be a non-root UID with GID 0 (e.g. "1000:0"), got {service.get("user")!r}'
        )
    if service.get("read_only") is not True:
        problems.append(f"{where}: read_only must be true")
    writable = _tmpfs_targets(service)
    for volume in service.get("volumes") or []:
        if (
            isinstance(volume, Mapping)
            and volume.get("type") == "volume"
            and not volume.get("read_only")
        ):
            writable.add(volume["target"])
    for directory in RUNTIME_DIRS:
        if directory not in writable:
            problems.append(
                f"{where}: {directory} needs a tmpfs or a writable volume (read_only root)"
            )
    healthcheck = service.get("healthcheck") or {}
    if healthcheck.get("test") != HEALTHCHECK:
        problems.append(
            f"{where}: healthcheck.test must be {HEALTHCHECK} (the image has no shell or curl)"
        )
    if "ALL" not in (service.get("cap_drop") or []):
        problems.append(f"{where}: cap_drop must contain ALL")
    if not any(
        str(option).startswith("no-new-privileges") for option in service.get("security_opt") or []
    ):
        problems.append(f"{where}: security_opt must contain no-new-privileges:true")
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    env = {key: str(value) for key, value in environment.items() if value is not None}
    settings, env_problems = settings_from_env(env, where)
    problems += env_problems
    if "SHUTDOWN_TIMEOUT" not in env:
        problems.append(
            f"{where}: set SHUTDOWN_TIMEOUT explicitly (stop_grace_period is derived from it)"
        )
    grace = service.get("stop_grace_period")
    problems += grace_problems(
        settings.shutdown_timeout, None if grace is None else parse_duration(grace), where
    )
    for volume in service.get("volumes") or []:
        target = volume.get("target") if isinstance(volume, Mapping) else str(volume).split(":")[1]
        if target in ("/etc/squid", "/etc/squid/squid.conf.default"):
            problems.append(f"{where}: a mount at {target} hides the packaged default config")
    return problems


def bind_sources(service: Mapping[str, Any], compose_dir: Path) -> list[Path]:
    """Bind-mount sources with ${VAR:-default} resolved to the default, relative to the compose file."""
    sources = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, Mapping) and volume.get("type") == "bind":
            source = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(volume["source"]))
            sources.append(Path(os.path.normpath(compose_dir / source)))
    return sources
