"""The image's own configuration, as `inspect` shows it to an operator (issue 4's config)."""

from __future__ import annotations

import json

from tests.support.runtime import ContainerRuntime


def _config(container_runtime: ContainerRuntime, image_ref: str) -> dict[str, object]:
    raw = container_runtime.command(["image", "inspect", image_ref], timeout=60)
    data = json.loads(raw.stdout)[0]
    config = data.get("Config") or {}
    assert isinstance(config, dict), f"image inspect of {image_ref} has no Config: {data}"
    return config


def test_image_runs_as_non_root_with_exec_form_python_entrypoint(
    container_runtime: ContainerRuntime, image_ref: str
) -> None:
    config = _config(container_runtime, image_ref)
    assert str(config.get("User", "")).split(":")[0] == "1000"
    entrypoint = config.get("Entrypoint") or []
    assert isinstance(entrypoint, list) and entrypoint, f"no exec-form ENTRYPOINT: {config}"
    assert entrypoint[0].startswith("/usr/bin/python3"), (
        f"ENTRYPOINT must start the interpreter: {entrypoint}"
    )
    assert not any(part in ("/bin/sh", "sh", "-c") for part in entrypoint), entrypoint


def test_image_exposes_proxy_and_health_ports(
    container_runtime: ContainerRuntime, image_ref: str
) -> None:
    exposed = _config(container_runtime, image_ref).get("ExposedPorts") or {}
    assert isinstance(exposed, dict)
    assert {"3128/tcp", "8080/tcp"} <= set(exposed), exposed
