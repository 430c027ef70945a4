"""The image config: entrypoint, user, ports, env and OCI labels, and that it is exactly
image/parts/image_config.bzl's IMAGE_CONFIG (CEPHALOPROXY_IMAGE_CONFIG, its JSON), the one
source that //image and the offline CI image both read."""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

import pytest

from image.checks.built_image import built_image_or_skip
from image.layers.oci_layout import Image, find_runfile

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
def config() -> dict[str, Any]:
    image: Image = built_image_or_skip()
    inner = image.config["config"]
    assert isinstance(inner, dict)
    return inner


def test_entrypoint_runs_the_interpreter_directly(config: dict[str, Any]) -> None:
    assert config["Entrypoint"] == ["/usr/bin/python3", "/usr/local/bin/entrypoint.py"]
    assert not config.get("Cmd")


def test_runs_as_uid_1000(config: dict[str, Any]) -> None:
    assert config["User"] == "1000"


def test_exposes_proxy_and_health_ports(config: dict[str, Any]) -> None:
    assert set(config["ExposedPorts"]) == {"3128/tcp", "8080/tcp"}


def test_environment(config: dict[str, Any]) -> None:
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PATH"].split(":")[0] == "/usr/local/bin" and "/usr/bin" in env["PATH"].split(":")
    assert env["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONPATH"] == "/usr/lib/cephaloproxy"
    assert config["WorkingDir"]


def test_oci_labels(config: dict[str, Any]) -> None:
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


@pytest.fixture(scope="module")
def shared_config() -> dict[str, Any]:
    raw = os.environ.get("CEPHALOPROXY_IMAGE_CONFIG")
    if not raw:
        pytest.skip(
            "no image_config.json: run under Bazel or after `bazel build //image/parts:image_config_json`"
        )
    return json.loads(find_runfile(raw).read_text(encoding="utf-8"))


def test_config_is_exactly_the_shared_image_config(
    config: dict[str, Any], shared_config: dict[str, Any]
) -> None:
    """Every key of image_config.bzl, and nothing the builder added on its own."""
    expected = {
        "Entrypoint": shared_config["entrypoint"],
        "Env": sorted(f"{k}={v}" for k, v in shared_config["env"].items()),
        "ExposedPorts": sorted(shared_config["exposed_ports"]),
        "User": shared_config["user"],
        "WorkingDir": shared_config["workdir"],
        "StopSignal": shared_config.get("stop_signal"),
        "Cmd": None,
    }
    actual = {
        "Entrypoint": config.get("Entrypoint"),
        "Env": sorted(config.get("Env") or []),
        "ExposedPorts": sorted(config.get("ExposedPorts") or {}),
        "User": config.get("User"),
        "WorkingDir": config.get("WorkingDir"),
        "StopSignal": config.get("StopSignal"),
        "Cmd": config.get("Cmd") or None,
    }
    assert actual == expected
    unexpected = sorted(
        set(config)
        - {"Entrypoint", "Env", "ExposedPorts", "User", "WorkingDir", "StopSignal", "Labels", "Cmd"}
    )
    assert unexpected == [], f"config keys that image_config.bzl does not set: {unexpected}"
