"""The image config: entrypoint, user, ports, env and OCI labels."""

from __future__ import annotations

import datetime

import pytest

from image.built_image import built_image_or_skip
from image.layers.oci_layout import Image

LABEL_KEYS = [
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.base.name",
]


@pytest.fixture(scope="module")
def config() -> dict[str, object]:
    image: Image = built_image_or_skip()
    inner = image.config["config"]
    assert isinstance(inner, dict)
    return inner


def test_entrypoint_runs_the_interpreter_directly(config: dict[str, object]) -> None:
    assert config["Entrypoint"] == ["/usr/bin/python3", "/usr/local/bin/entrypoint.py"]
    assert not config.get("Cmd")


def test_runs_as_uid_1000(config: dict[str, object]) -> None:
    assert config["User"] == "1000"


def test_exposes_proxy_and_health_ports(config: dict[str, object]) -> None:
    assert set(config["ExposedPorts"]) == {"3128/tcp", "8080/tcp"}  # type: ignore[arg-type]


def test_environment(config: dict[str, object]) -> None:
    env = dict(item.split("=", 1) for item in config["Env"])  # type: ignore[union-attr]
    assert env["PATH"].split(":")[0] == "/usr/local/bin" and "/usr/bin" in env["PATH"].split(":")
    assert env["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONPATH"] == "/usr/lib/cephaloproxy"
    assert config["WorkingDir"]


def test_oci_labels(config: dict[str, object]) -> None:
    labels = config["Labels"]
    assert isinstance(labels, dict)
    missing = [key for key in LABEL_KEYS if not labels.get(key)]
    assert missing == []
    assert labels["org.opencontainers.image.title"] == "CephaloProxy"
    # The publisher's labels appear only when the builder sets them (//image/labels).
    publisher = {
        "org.opencontainers.image.source",
        "org.opencontainers.image.url",
        "org.opencontainers.image.vendor",
    }
    assert {key: labels[key] for key in publisher if key in labels} == {}
    # Unstamped builds carry fixed values (reproducible); --stamp fills them in.
    created = labels["org.opencontainers.image.created"].replace("Z", "+00:00")
    datetime.datetime.fromisoformat(created)
