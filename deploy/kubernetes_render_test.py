"""Every rendered kustomization (base, overlays, base + each example component) is valid and restricted.

Renders with `kubectl kustomize` (offline), validates every object against the Kubernetes
OpenAPI schemas of KUBERNETES_VERSION (kubernetes-validate, strict: unknown fields fail)
and checks what a namespace enforcing the restricted Pod Security Standard would reject,
plus the image's own contract (deploy/checks.py). Not a Bazel test: kubectl and
kubernetes-validate exist on the host, not in the offline build environment; .ci/run's
deploy phase runs it from a venv made from deploy/requirements_lock.txt. It never skips:
without kubectl or kubernetes-validate it fails and says what to install.

kubernetes-validate knows only the built-in kinds (a cert-manager Certificate is its
SchemaNotFoundError). cert-manager's objects are validated, as strictly, against
CERT_MANAGER_SCHEMAS: written here from the cert-manager.io/v1 API reference for the
fields this repository uses (unknown fields rejected, types and enums checked), not the
full CRDs; a field not listed there fails until it is added with its type.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import checks

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - the failure message is the point
    kubernetes_validate = None

KUBERNETES_VERSION = "1.32.0"
REPO = Path(__file__).absolute().parent.parent
KUBERNETES_DIR = REPO / "deploy" / "kubernetes"
EXAMPLES_DIR = REPO / "examples"
OVERLAYS = (
    "openshift",
    "ssl-bump",
    "cache",
    "autoscaling",
    "ssl-bump-cert-manager",
    "metrics",
    "metrics-annotations",
)
# Custom resources kubernetes-validate has no schema for: checked by their own tests below.
CUSTOM_KINDS = {"PodMonitor"}
EXAMPLE_COMPONENTS = tuple(sorted(p.parent.name for p in EXAMPLES_DIR.glob("*/kustomization.yaml")))
# Secrets the operator creates (never in git); the overlays name them.
OPERATOR_SECRETS = {"cephaloproxy-tls", "cephaloproxy-htpasswd"}
TARGETS = ("base", *OVERLAYS, *(f"base+{name}" for name in EXAMPLE_COMPONENTS))

_GO_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$"}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object"},
        "annotations": {"type": "object"},
    },
}
CERT_MANAGER_SCHEMAS: dict[str, dict[str, Any]] = {
    "Issuer": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "cert-manager.io/v1"},
            "kind": {"const": "Issuer"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "maxProperties": 1,
                "properties": {
                    "selfSigned": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "crlDistributionPoints": {"type": "array", "items": {"type": "string"}}
                        },
                    },
                    "ca": {
                        "type": "object",
                        "required": ["secretName"],
                        "additionalProperties": False,
                        "properties": {"secretName": {"type": "string"}},
                    },
                },
            },
        },
    },
    "Certificate": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "cert-manager.io/v1"},
            "kind": {"const": "Certificate"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["issuerRef", "secretName"],
                "additionalProperties": False,
                "properties": {
                    "isCA": {"type": "boolean"},
                    "commonName": {"type": "string", "maxLength": 64},
                    "subject": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            key: {"type": "array", "items": {"type": "string"}}
                            for key in (
                                "organizations",
                                "organizationalUnits",
                                "countries",
                                "localities",
                                "provinces",
                            )
                        },
                    },
                    "secretName": {"type": "string"},
                    "duration": _GO_DURATION,
                    "renewBefore": _GO_DURATION,
                    "privateKey": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                            "size": {"type": "integer"},
                            "encoding": {"enum": ["PKCS1", "PKCS8"]},
                            "rotationPolicy": {"enum": ["Never", "Always"]},
                        },
                    },
                    "usages": {
                        "type": "array",
                        "items": {
                            "enum": [
                                "signing",
                                "digital signature",
                                "content commitment",
                                "key encipherment",
                                "key agreement",
                                "data encipherment",
                                "cert sign",
                                "crl sign",
                                "encipher only",
                                "decipher only",
                                "any",
                                "server auth",
                                "client auth",
                                "code signing",
                                "email protection",
                                "s/mime",
                                "ipsec end system",
                                "ipsec tunnel",
                                "ipsec user",
                                "timestamping",
                                "ocsp signing",
                                "microsoft sgc",
                                "netscape sgc",
                            ]
                        },
                    },
                    "issuerRef": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string"},
                            "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                            "group": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}


def validate_object(doc: dict[str, Any]) -> None:
    """kubernetes-validate for the built-in kinds, CERT_MANAGER_SCHEMAS for cert-manager's; raises when invalid."""
    if str(doc.get("apiVersion", "")).startswith("cert-manager.io/"):
        import jsonschema  # kubernetes-validate's own dependency

        schema = CERT_MANAGER_SCHEMAS.get(doc.get("kind", ""))
        assert schema is not None, (
            f"no schema for cert-manager kind {doc.get('kind')}: add it to CERT_MANAGER_SCHEMAS"
        )
        jsonschema.validate(doc, schema)
        return
    validator().validate(doc, KUBERNETES_VERSION, strict=True)


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl is required to render deploy/kubernetes (kubectl >= 1.27 has kustomize built in)",
            pytrace=False,
        )
    return found


def validator() -> Any:
    if kubernetes_validate is None:
        pytest.fail(
            "kubernetes-validate is missing: python3 -m pip install --require-hashes -r deploy/requirements_lock.txt",
            pytrace=False,
        )
    return kubernetes_validate


def kustomize(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def with_component(component: str, scratch: Path) -> Path:
    """A kustomization in `scratch` of the base plus one example component (kustomize wants relative paths)."""
    directory = scratch / component
    directory.mkdir()
    base = os.path.relpath(KUBERNETES_DIR / "base", directory)
    example = os.path.relpath(EXAMPLES_DIR / component, directory)
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {base}\ncomponents:\n  - {example}\n"
    )
    return directory


@pytest.fixture(scope="module")
def rendered() -> Iterator[dict[str, list[dict[str, Any]]]]:
    # Beside the repository, not in /tmp: relative paths must reach it from the scratch dir.
    scratch = Path(tempfile.mkdtemp(prefix=".render-", dir=REPO / "deploy"))
    try:
        result = {"base": kustomize(KUBERNETES_DIR / "base")}
        for overlay in OVERLAYS:
            result[overlay] = kustomize(KUBERNETES_DIR / "overlays" / overlay)
        for component in EXAMPLE_COMPONENTS:
            result[f"base+{component}"] = kustomize(with_component(component, scratch))
        yield result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == kind]


def the(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def configmap_named(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    matches = [cm for cm in of_kind(docs, "ConfigMap") if cm["metadata"]["name"] == name]
    assert len(matches) == 1, f"no rendered ConfigMap named {name}"
    return matches[0]


def volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod["volumes"] if v["name"] == name)


def mount_at(pod: dict[str, Any], path: str) -> dict[str, Any] | None:
    container = checks.proxy_container(pod)
    return next((m for m in container.get("volumeMounts", []) if m["mountPath"] == path), None)


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates_against_the_kubernetes_schema(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    docs = rendered[target]
    assert docs, f"{target} rendered nothing"
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            validate_object(doc)
        except Exception as error:
            pytest.fail(
                f"{target}: {doc['kind']}/{doc['metadata'].get('name')}: {error}", pytrace=False
            )


def test_the_schema_check_can_fail(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """A typo'd field and a wrong type are rejected, so the test above means something."""
    validate = validator().validate
    deployment = the(rendered["base"], "Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "45s"
    for broken in (typo, wrong_type):
        # A schema violation, not a missing schema or an unsupported version.
        with pytest.raises(validator().ValidationError):
            validate(broken, KUBERNETES_VERSION, strict=True)
    certificate = the(rendered["ssl-bump-cert-manager"], "Certificate")
    for field, value in (("renewbefore", "720h"), ("duration", "30 days"), ("isCA", "yes")):
        broken = copy.deepcopy(certificate)
        broken["spec"][field] = value
        import jsonschema  # kubernetes-validate's own dependency

        with pytest.raises(jsonschema.ValidationError):
            validate_object(broken)


@pytest.mark.parametrize("target", TARGETS)
def test_every_pod_meets_the_restricted_pod_security_standard(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    templates = [
        d["spec"]["template"]["spec"]
        for d in rendered[target]
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
    ]
    assert templates, f"{target} has no workload"
    for pod in templates:
        assert checks.restricted_problems(pod, target) == []


@pytest.mark.parametrize("target", TARGETS)
def test_the_deployment_keeps_the_image_contract(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    """Runtime dirs writable, config in a ConfigMap dir, probes, resources, grace = SHUTDOWN_TIMEOUT + margin."""
    assert checks.deployment_problems(the(rendered[target], "Deployment"), target) == []


@pytest.mark.parametrize("target", TARGETS)
def test_every_reference_resolves(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    deployment = the(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    configmaps = {cm["metadata"]["name"] for cm in of_kind(docs, "ConfigMap")}
    claims = {pvc["metadata"]["name"] for pvc in of_kind(docs, "PersistentVolumeClaim")}
    for item in pod["volumes"]:
        if "configMap" in item:
            assert item["configMap"]["name"] in configmaps, item
        if "secret" in item:
            issued = {c["spec"]["secretName"] for c in of_kind(docs, "Certificate")}
            assert item["secret"]["secretName"] in OPERATOR_SECRETS | issued, item
        if "persistentVolumeClaim" in item:
            assert item["persistentVolumeClaim"]["claimName"] in claims, item
    for kind, selector in (
        ("Service", lambda d: d["spec"]["selector"]),
        ("PodDisruptionBudget", lambda d: d["spec"]["selector"]["matchLabels"]),
        ("NetworkPolicy", lambda d: d["spec"]["podSelector"]["matchLabels"]),
    ):
        chosen = selector(the(docs, kind))
        assert chosen and all(labels.get(k) == v for k, v in chosen.items()), (kind, chosen, labels)
    port_names = {p["name"] for p in checks.proxy_container(pod)["ports"]}
    service = the(docs, "Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [
        ("proxy", 3128),
        ("metrics", 8080),
    ]
    for rule in the(docs, "NetworkPolicy")["spec"]["ingress"]:
        assert {p["port"] for p in rule["ports"]} <= port_names
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"], (
            "the HPA owns replicas; apply must not reset it"
        )


@pytest.mark.parametrize("target", TARGETS)
def test_each_config_drains_within_shutdown_timeout(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    docs = rendered[target]
    pod = the(docs, "Deployment")["spec"]["template"]["spec"]
    settings, _ = checks.settings_from_env(
        checks.container_env(checks.proxy_container(pod)), target
    )
    config = configmap_named(docs, volume(pod, "config")["configMap"]["name"])
    text = config["data"][settings.config.name]
    assert checks.config_shutdown_problems(text, settings.shutdown_timeout, target) == []
    assert "pid_filename /var/run/squid/" in text  # the entrypoint refuses a config without it


EXPECTED_CONFIG = {
    "base": KUBERNETES_DIR / "base" / "squid.conf",
    "openshift": KUBERNETES_DIR / "base" / "squid.conf",
    "autoscaling": KUBERNETES_DIR / "base" / "squid.conf",
    "metrics": KUBERNETES_DIR / "base" / "squid.conf",
    "metrics-annotations": KUBERNETES_DIR / "base" / "squid.conf",
    "ssl-bump": EXAMPLES_DIR / "ssl-bump" / "squid.conf",
    "ssl-bump-cert-manager": EXAMPLES_DIR / "ssl-bump" / "squid.conf",
    "cache": EXAMPLES_DIR / "disk-cache" / "squid.conf",
    **{f"base+{name}": EXAMPLES_DIR / name / "squid.conf" for name in EXAMPLE_COMPONENTS},
}


@pytest.mark.parametrize("target", TARGETS)
def test_the_configmaps_are_the_repository_files(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    """Generated from examples/ and base/ (byte for byte), with each example's conf.d lists."""
    docs = rendered[target]
    pod = the(docs, "Deployment")["spec"]["template"]["spec"]
    config = configmap_named(docs, volume(pod, "config")["configMap"]["name"])
    assert config["data"] == {"squid.conf": EXPECTED_CONFIG[target].read_text()}
    conf_d = configmap_named(docs, volume(pod, "conf-d")["configMap"]["name"])
    example_dir = EXPECTED_CONFIG[target].parent / "conf.d"
    expected = (
        {p.name: p.read_text() for p in example_dir.iterdir()} if example_dir.is_dir() else {}
    )
    assert (conf_d.get("data") or {}) == expected


def test_no_overlay_keeps_a_copy_of_a_config() -> None:
    copies = [
        p for p in (KUBERNETES_DIR / "overlays").rglob("*") if p.name.endswith((".conf", ".txt"))
    ]
    assert copies == [], "overlays must use examples/ through components, not copies"


def test_base_runs_two_spread_replicas_and_never_drops_below_them(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    spec = the(rendered["base"], "Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    spread = spec["template"]["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname"]
    assert the(rendered["base"], "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1,
        "selector": spec["selector"],
    }


def test_openshift_leaves_uid_gid_and_fsgroup_to_the_scc(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    pod = the(rendered["openshift"], "Deployment")["spec"]["template"]["spec"]
    contexts = [pod.get("securityContext") or {}] + [
        c.get("securityContext") or {} for c in pod["containers"]
    ]
    for context in contexts:
        for field in ("runAsUser", "runAsGroup", "fsGroup", "fsGroupChangePolicy"):
            assert field not in context, (field, context)
    assert pod["securityContext"]["runAsNonRoot"] is True
    base_pod = the(rendered["base"], "Deployment")["spec"]["template"]["spec"]
    assert (
        base_pod["securityContext"]["runAsUser"],
        base_pod["securityContext"]["runAsGroup"],
    ) == (1000, 0)


def test_ssl_bump_mounts_the_tls_secret_as_a_directory(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    pod = the(rendered["ssl-bump"], "Deployment")["spec"]["template"]["spec"]
    mount = mount_at(pod, "/etc/squid/ssl_cert")
    assert mount is not None and mount.get("readOnly") is True and "subPath" not in mount
    secret = volume(pod, mount["name"])["secret"]
    assert secret["secretName"] == "cephaloproxy-tls"
    assert secret["defaultMode"] & 0o007 == 0, "the CA key must not be world-readable"


def test_cert_manager_issues_and_rotates_the_ca_the_ssl_bump_pod_mounts(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["ssl-bump-cert-manager"]
    pod = the(docs, "Deployment")["spec"]["template"]["spec"]
    mount = mount_at(pod, "/etc/squid/ssl_cert")
    assert mount is not None, "nothing is mounted at /etc/squid/ssl_cert"
    mounted = volume(pod, mount["name"])["secret"]["secretName"]
    certificate = the(docs, "Certificate")["spec"]
    assert certificate["secretName"] == mounted == "cephaloproxy-tls"
    assert certificate["isCA"] is True and "cert sign" in certificate["usages"]
    issuer = the(docs, "Issuer")
    assert certificate["issuerRef"] == {
        "name": issuer["metadata"]["name"],
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    assert "selfSigned" in issuer["spec"]
    hours = {key: float(certificate[key].removesuffix("h")) for key in ("duration", "renewBefore")}
    assert 0 < hours["renewBefore"] < hours["duration"] / 2, hours
    assert certificate["privateKey"]["rotationPolicy"] == "Always"  # a renewal rotates the CA key
    # Watch mode (the default) is what makes the pod take the renewed CA without a rollout.
    env = checks.container_env(checks.proxy_container(pod))
    assert env.get("CONFIG_RELOAD", "watch") == "watch"
    ssl_bump = [doc for doc in rendered["ssl-bump"] if doc["kind"] != "ConfigMap"]
    assert [
        doc for doc in docs if doc["kind"] not in ("Certificate", "Issuer", "ConfigMap")
    ] == ssl_bump


def test_cache_puts_the_cache_dir_on_a_claim(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["cache"]
    deployment = the(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    mount = mount_at(pod, "/var/spool/squid")
    assert mount is not None, "nothing is mounted at /var/spool/squid"
    spool = volume(pod, mount["name"])
    assert set(spool) == {"name", "persistentVolumeClaim"}, spool
    assert (deployment["spec"]["replicas"], deployment["spec"]["strategy"]) == (
        1,
        {"type": "Recreate"},
    )
    claim = the(docs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    text = configmap_named(docs, volume(pod, "config")["configMap"]["name"])["data"]["squid.conf"]
    cache_dirs = [line.split() for line in text.splitlines() if line.startswith("cache_dir ")]
    assert [words[2] for words in cache_dirs] == ["/var/spool/squid"]
    size_mb = int(cache_dirs[0][3])
    assert (
        size_mb * 1.2
        <= int(claim["spec"]["resources"]["requests"]["storage"].removesuffix("Gi")) * 1024
    )


def test_metrics_are_scraped_from_the_health_port(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The Service names the metrics port; the PodMonitor and the annotations point at /metrics on it."""
    docs = rendered["metrics"]
    deployment = the(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in checks.proxy_container(pod)["ports"]}
    monitor = the(docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    chosen = monitor["spec"]["selector"]["matchLabels"]
    assert chosen and all(labels.get(k) == v for k, v in chosen.items())
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
    assert float(endpoint["scrapeTimeout"].removesuffix("s")) <= float(
        endpoint["interval"].removesuffix("s")
    )
    assert not of_kind(rendered["base"], "PodMonitor"), (
        "the PodMonitor needs the operator's CRD: a component only"
    )
    annotated = the(rendered["metrics-annotations"], "Deployment")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotated == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ports["health"]),
        "prometheus.io/path": "/metrics",
    }
    service = {p["name"]: p for p in the(rendered["base"], "Service")["spec"]["ports"]}
    assert service["metrics"]["targetPort"] == "health"


def test_the_monitoring_namespace_may_scrape(rendered: dict[str, list[dict[str, Any]]]) -> None:
    rules = the(rendered["base"], "NetworkPolicy")["spec"]["ingress"]
    monitoring = [
        rule
        for rule in rules
        if {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        in rule.get("from", [])
    ]
    assert monitoring and all(p["port"] == "health" for rule in monitoring for p in rule["ports"])
