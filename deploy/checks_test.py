"""deploy/checks.py on the base Deployment as written, and on planted bugs each check must catch.

Needs only PyYAML (Debian's python3-yaml offline), so it runs under Bazel; the rendered
overlays are checked by kubernetes_render_test.py where kubectl exists.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import checks

DEPLOY_DIR = Path(__file__).absolute().parent
REPO = DEPLOY_DIR.parent
BASE_DEPLOYMENT = DEPLOY_DIR / "kubernetes" / "base" / "deployment.yaml"
CONFIGS = [
    REPO / "deploy" / "kubernetes" / "base" / "squid.conf",
    *sorted((REPO / "examples").glob("*/squid.conf")),
]


@pytest.fixture
def deployment() -> dict[str, Any]:
    return yaml.safe_load(BASE_DEPLOYMENT.read_text())


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return pod(deployment)["containers"][0]


def set_env(name: str, value: str | None) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        env = [e for e in container(d)["env"] if e["name"] != name]
        if value is not None:
            env.append({"name": name, "value": value})
        container(d)["env"] = env

    return mutate


def drop_mount(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        container(d)["volumeMounts"] = [
            m for m in container(d)["volumeMounts"] if m["mountPath"] != path
        ]

    return mutate


def test_the_base_deployment_passes(deployment: dict[str, Any]) -> None:
    assert checks.deployment_problems(deployment, "base") == []


# (id, mutation, words the problem must contain)
PLANTED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "privilege-escalation",
        lambda d: container(d)["securityContext"].update(allowPrivilegeEscalation=True),
        "allowPrivilegeEscalation",
    ),
    (
        "escalation-unset",
        lambda d: container(d)["securityContext"].pop("allowPrivilegeEscalation"),
        "allowPrivilegeEscalation",
    ),
    (
        "capabilities-kept",
        lambda d: container(d)["securityContext"]["capabilities"].update(drop=[]),
        "drop must contain ALL",
    ),
    (
        "capability-added",
        lambda d: container(d)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
        "NET_ADMIN",
    ),
    ("privileged", lambda d: container(d)["securityContext"].update(privileged=True), "privileged"),
    (
        "run-as-root-allowed",
        lambda d: (
            pod(d)["securityContext"].pop("runAsNonRoot"),
            container(d)["securityContext"].pop("runAsNonRoot"),
        ),
        "runAsNonRoot",
    ),
    ("uid-0", lambda d: pod(d)["securityContext"].update(runAsUser=0), "runAsUser must not be 0"),
    (
        "seccomp-unconfined",
        lambda d: container(d)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "seccompProfile",
    ),
    (
        "writable-root",
        lambda d: container(d)["securityContext"].update(readOnlyRootFilesystem=False),
        "readOnlyRootFilesystem",
    ),
    ("host-network", lambda d: pod(d).update(hostNetwork=True), "hostNetwork"),
    (
        "host-path",
        lambda d: pod(d)["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "hostPath",
    ),
    ("host-port", lambda d: container(d)["ports"][0].update(hostPort=3128), "hostPort"),
    (
        "unsafe-sysctl",
        lambda d: pod(d)["securityContext"].update(
            sysctls=[{"name": "kernel.msgmax", "value": "1"}]
        ),
        "sysctl",
    ),
    ("grace-too-short", lambda d: pod(d).update(terminationGracePeriodSeconds=30), "grace period"),
    ("grace-missing", lambda d: pod(d).pop("terminationGracePeriodSeconds"), "grace period"),
    ("grace-absurd", lambda d: pod(d).update(terminationGracePeriodSeconds=600), "grace period"),
    ("timeout-raised-alone", set_env("SHUTDOWN_TIMEOUT", "60"), "grace period"),
    ("timeout-implicit", set_env("SHUTDOWN_TIMEOUT", None), "SHUTDOWN_TIMEOUT explicitly"),
    ("log-level-number", set_env("LOG_LEVEL", "1"), "LOG_LEVEL"),
    (
        "config-not-mounted",
        set_env("CEPHALOPROXY_CONFIG", "/etc/squid/elsewhere/squid.conf"),
        "CEPHALOPROXY_CONFIG",
    ),
    ("tmp-not-writable", drop_mount("/tmp"), "/tmp"),
    ("run-dir-not-writable", drop_mount("/var/run/squid"), "/var/run/squid"),
    (
        "shm-on-disk",
        lambda d: next(v for v in pod(d)["volumes"] if v["name"] == "shm")["emptyDir"].pop(
            "medium"
        ),
        "/dev/shm",
    ),
    (
        "config-subpath",
        lambda d: next(m for m in container(d)["volumeMounts"] if m["name"] == "config").update(
            subPath="squid.conf"
        ),
        "subPath",
    ),
    (
        "config-over-etc-squid",
        lambda d: (
            next(m for m in container(d)["volumeMounts"] if m["name"] == "config").update(
                mountPath="/etc/squid"
            ),
            set_env("CEPHALOPROXY_CONFIG", "/etc/squid/squid.conf")(d),
        ),
        "hides /etc/squid/squid.conf.default",
    ),
    (
        "readiness-on-health",
        lambda d: container(d)["readinessProbe"]["httpGet"].update(path="/health"),
        "readinessProbe",
    ),
    ("no-startup-probe", lambda d: container(d).pop("startupProbe"), "startupProbe"),
    (
        "no-memory-limit",
        lambda d: container(d)["resources"]["limits"].pop("memory"),
        "limits.memory",
    ),
    ("health-port-moved", set_env("HEALTH_PORT", "9090"), "HEALTH_PORT"),
    (
        "rollout-drops-a-pod",
        lambda d: d["spec"]["strategy"]["rollingUpdate"].update(maxUnavailable=1),
        "maxUnavailable",
    ),
    (
        "selector-mismatch",
        lambda d: d["spec"]["selector"]["matchLabels"].update(extra="x"),
        "selector",
    ),
]


@pytest.mark.parametrize(
    ("mutation", "expected"), [(m, e) for _, m, e in PLANTED], ids=[i for i, _, _ in PLANTED]
)
def test_a_planted_bug_is_reported(
    deployment: dict[str, Any], mutation: Callable[[dict[str, Any]], None], expected: str
) -> None:
    broken = copy.deepcopy(deployment)
    mutation(broken)
    problems = checks.deployment_problems(broken, "base")
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize("config", CONFIGS, ids=[f"{c.parent.name}" for c in CONFIGS])
def test_every_config_drains_inside_the_deployments_shutdown_timeout(
    config: Path, deployment: dict[str, Any]
) -> None:
    settings, problems = checks.settings_from_env(
        checks.container_env(container(deployment)), "base"
    )
    assert problems == []
    assert (
        checks.config_shutdown_problems(config.read_text(), settings.shutdown_timeout, str(config))
        == []
    )


def test_a_long_shutdown_lifetime_is_reported() -> None:
    assert checks.config_shutdown_problems("shutdown_lifetime 30 seconds\n", 30.0, "x")
    assert checks.config_shutdown_problems("# no directive: Squid's default is 30 s\n", 30.0, "x")
    assert checks.config_shutdown_problems("shutdown_lifetime 1 minute\n", 45.0, "x")
    assert checks.config_shutdown_problems("shutdown_lifetime 5 seconds\n", 30.0, "x") == []


@pytest.mark.parametrize(
    ("text", "seconds"), [("40s", 40.0), ("1m30s", 90.0), ("1h", 3600.0), ("500ms", 0.5)]
)
def test_compose_durations(text: str, seconds: float) -> None:
    assert checks.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "40", "forty", "40 s", "s"])
def test_bad_compose_durations(text: str) -> None:
    with pytest.raises(ValueError):
        checks.parse_duration(text)
